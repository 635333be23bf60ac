"""The torch backend: the seqspec.Backend methods, over the builders (_builders), weight mappings (_weights) and activations."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch
from torch import nn

import seqspec
from seqspec import BackendError, Spec

from . import _layers as ly
from . import _weights as w
from ._activations import ACTIVATIONS
from ._builders import BACKEND_NAME, BUILDERS, build_model

SAVE_FORMAT = "seqspec-torch/1"

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
# Token ids go in as int64 whatever the spec's integer dtype: torch's embedding takes int32 or int64 alike.
_TOKENS = torch.int64


@contextlib.contextmanager
def _mode(model: nn.Module, training: bool):
    """Run in training or inference mode, then restore the model's previous mode."""
    was = model.training
    model.train(training)
    try:
        yield
    finally:
        model.train(was)


class TorchBackend(seqspec.Backend):
    """Compiles a spec to a torch.nn.Module (see seqspec.Backend for the contract)."""

    name = BACKEND_NAME
    extra = "torch"
    suffix = ".pt"
    builders = BUILDERS
    weight_maps = w.WEIGHT_MAPS
    activations = ACTIVATIONS

    def compile(self, spec: Spec) -> ly.Model:
        """The spec's ly.Model in spec.dtype, in eval mode (as every seqspec model is built: predict,
        check and export want inference; training calls model.train())."""
        model = build_model(spec).to(_DTYPES[spec.dtype])
        model.eval()
        return model

    def get_weights(self, model: ly.Model, spec: Spec) -> dict[str, np.ndarray]:
        return {b.name: b.get().cpu().numpy().copy() for b in w.model_bindings(model, spec)}

    def assign_weights(self, model: ly.Model, spec: Spec, weights: dict[str, np.ndarray]) -> None:
        for b in w.model_bindings(model, spec):
            b.set(torch.as_tensor(np.asarray(weights[b.name]), dtype=b.tensor.dtype))

    def fit(self, spec: Spec, model: ly.Model, plan, train, validation) -> list[dict]:
        from ._train import fit

        return fit(spec, model, plan, train, validation)

    def check_threads(self) -> None:
        torch.set_num_threads(1)

    def versions(self) -> dict:
        return {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}

    def count_params(self, model: nn.Module) -> tuple[int, int]:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
        # Persistent buffers are the batch-norm moving statistics; the zero bias_hh of
        # nn.RNN/nn.LSTM is a non-persistent buffer and no weight of the spec.
        params = {id(p) for p in model.parameters()}
        buffers = sum(t.numel() for t in model.state_dict(keep_vars=True).values() if id(t) not in params)
        return trainable, frozen + buffers

    def _tensor(self, model: ly.Model, x: np.ndarray, tokens: bool = False) -> torch.Tensor:
        """x as the model's input (token ids as integers, with `tokens`), or as its float dtype."""
        # Any array NumPy can make contiguous: torch refuses negative strides (x[:, ::-1]).
        return torch.as_tensor(np.ascontiguousarray(x), dtype=_TOKENS if tokens else _DTYPES[model.spec.dtype])

    def _input(self, model: ly.Model, x: np.ndarray) -> torch.Tensor:
        return self._tensor(model, x, tokens=model.spec.input.tokens)

    def predict(self, model: ly.Model, x: np.ndarray) -> np.ndarray:
        with _mode(model, False), torch.inference_mode():
            return model(self._input(model, x)).numpy().copy()

    def layer_outputs(self, model: ly.Model, x: np.ndarray) -> list[np.ndarray]:
        with _mode(model, False), torch.inference_mode():
            return [y.numpy().copy() for y in model.layer_outputs(self._input(model, x))]

    def gradients(self, model: ly.Model, spec: Spec, x: np.ndarray, r: np.ndarray):
        """As seqspec.Backend.gradients; for token ids, which have no gradient, dloss/dx is None."""
        xt = self._input(model, x)
        if not spec.input.tokens:
            xt.requires_grad_(True)
        model.zero_grad(set_to_none=True)
        # cuDNN refuses backward through its RNN kernel in eval mode; the native kernel does not.
        with _mode(model, False), torch.backends.cudnn.flags(enabled=False):
            y = model(xt)
            (y * self._tensor(model, r)).sum().backward()
        grads = {}
        for b in w.model_bindings(model, spec):
            if b.trainable:
                g = b.grad()
                grads[b.name] = np.zeros(b.get().shape, dtype=spec.dtype) if g is None else g.numpy().copy()
        model.zero_grad(set_to_none=True)
        dx = None if spec.input.tokens else xt.grad.numpy().copy()
        return y.detach().numpy().copy(), dx, grads

    def training_output(self, model: ly.Model, x: np.ndarray, seed: int) -> np.ndarray:
        # A look at training mode, not a training step: the batch-norm moving statistics it
        # updates are put back, and the global torch RNG is left as it was.
        buffers = [(b, b.clone()) for b in model.buffers()]
        with _mode(model, True), torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed)
            y = model(self._input(model, x)).numpy().copy()
            for b, saved in buffers:
                b.copy_(saved)
        return y

    def save(self, model: ly.Model, spec: Spec, path: str) -> None:
        weights = {name: torch.from_numpy(a) for name, a in self.get_weights(model, spec).items()}
        # To a file object, not a name: torch.save names the zip's root folder after the file, and the
        # caller's temporary name would make two saves of one model differ.
        with open(path, "wb") as f:
            torch.save({"format": SAVE_FORMAT, "spec": spec.model_dump(mode="json"), "weights": weights}, f)

    def load(
        self, path: str, *, max_params: int = seqspec.DEFAULT_MAX_PARAMS, max_values: int = seqspec.DEFAULT_MAX_VALUES
    ) -> ly.Model:
        """Reload a model written by `save`. The stored spec passes the checks of seqspec.load
        (budgets included) before anything is built; every refusal is one BackendError line
        naming the file."""
        import json
        import os

        path = os.fspath(path)
        size = self.regular_file(path).st_size
        # No model within the budget needs more than 8 bytes a parameter plus its pickled spec
        # (a spec file is at most 1 MB; 4 MB leaves room for the archive's records).
        slack = 4_000_000
        if size > max_params * 8 + slack:
            raise BackendError(f"{path}: file is {size:,} bytes, more than any model within the budget of {max_params:,} parameters needs")
        # weights_only: the file holds tensors, strings and numbers, never pickled code; mmap:
        # the tensors stay in the file until the stored spec has passed the budgets.
        try:
            d: Any = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:  # a truncated zip, a pickle of code: torch's errors run to pages
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise BackendError(f"{path}: not a seqspec torch model ({first})") from None
        if not isinstance(d, dict) or d.get("format") != SAVE_FORMAT:
            raise BackendError(f"{path}: not a seqspec torch model (expected format {SAVE_FORMAT!r})")
        stored, weights = d.get("spec"), d.get("weights")
        if not isinstance(stored, dict) or not isinstance(weights, dict):
            raise BackendError(f"{path}: not a seqspec torch model (no stored spec and weights)")
        # A 2 kB file can claim a layer of billions of parameters: the stored spec goes through
        # seqspec.load as JSON text (JSON is YAML) so that no check is skipped or duplicated here.
        try:
            text = json.dumps(stored, indent=1, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise BackendError(f"{path}: the stored spec is not plain data ({e})") from None
        try:
            spec = seqspec.load(text, max_params=max_params, max_values=max_values)
        except seqspec.SpecError as e:
            problem = e.problems[0] if e.problems else None
            what = (f"{problem.field}: {problem.message}" if problem.field else problem.message) if problem else str(e)
            more = f" (and {len(e.problems) - 1} more)" if len(e.problems) > 1 else ""
            raise BackendError(f"{path}: the stored spec: {what}{more}") from None
        if not all(isinstance(t, torch.Tensor) for t in weights.values()):
            raise BackendError(f"{path}: not a seqspec torch model (a stored weight is not a tensor)")
        needed = seqspec.infer(spec).params * torch.finfo(_DTYPES[spec.dtype]).bits // 8 + slack
        if size > needed:
            raise BackendError(f"{path}: file is {size:,} bytes, more than its model {spec.name!r} needs ({needed:,})")
        return self.build(spec, {str(name): t.numpy() for name, t in weights.items()})


backend = TorchBackend()
