"""seqspec's pytest plugin entry point (installed as `seqspec_pytest`, the `pytest11` entry point).

pytest imports every installed plugin at start-up, in every run: this module imports nothing of
seqspec (Pydantic, the spec classes: about a second) and no framework. Only `pytest --seqspec`
loads the collector, seqspec._pytest_plugin.
"""

DEFAULT_DTYPES = ("float32", "float64")


def pytest_addoption(parser):
    group = parser.getgroup("seqspec", "seqspec equivalence checks")
    group.addoption(
        "--seqspec",
        action="store_true",
        default=False,
        help="collect spec files (.yaml, .yml) as tests: the files and folders named on the command line "
        "(a folder: the files directly in it), or else the seqspec_paths ini option. Each spec is a "
        "'validate' item, then one item per direction and dtype, e.g. 'keras->torch[float32]'.",
    )
    group.addoption(
        "--seqspec-dtypes",
        metavar="DTYPES",
        default=None,
        help="comma-separated dtypes to check each spec in (default: the seqspec_dtypes ini option, else float32,float64)",
    )
    parser.addini("seqspec_paths", type="paths", default=[], help="spec files and folders that `pytest --seqspec` collects when no path is given")
    parser.addini("seqspec_dtypes", type="args", default=list(DEFAULT_DTYPES), help="dtypes each spec is checked in (float32, float64)")


def pytest_configure(config):
    if not config.getoption("seqspec"):
        return
    from seqspec._pytest_plugin import SpecCollector

    config.pluginmanager.register(SpecCollector(config), "seqspec-collector")
