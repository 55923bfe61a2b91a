"""A trained autoencoder as one directory, and the calls everyone else uses on it.

Directory layout:
  model.safetensors     the WeightAutoencoder's weights
  config.json           autoencoder and training configs, token layout, architecture, zoo identity,
                        seed, code version
  training_log.jsonl    one JSON line per epoch (losses, validation agreement, timings)
  evaluation.json       optional: a reconstruction report written by `zooscope ae evaluate`
  training_state.pt     optional: the resumable training checkpoint (optimiser state, RNG)

High-level calls take and return state_dicts or stacked parameters; tokens, positions and
batching stay inside. Everything runs without gradient, in blocks of models to bound memory.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from zooscope.autoencoder.config import AutoencoderConfig, TrainingConfig
from zooscope.autoencoder.model import WeightAutoencoder
from zooscope.autoencoder.normalisation import TokenNormaliser
from zooscope.errors import ArchitectureMismatchError, ArtefactError
from zooscope.networks.architectures import Architecture, reference_state_dict
from zooscope.networks.parameters import StackedParams, check_state_dict, n_models, stack_state_dicts
from zooscope.population.batching import concat, spans, take, to_device
from zooscope.version import code_version
from zooscope.weightspace.tokens import TokenLayout

FORMAT = "zooscope-autoencoder"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TRAINING_LOG = "training_log.jsonl"
EVALUATION = "evaluation.json"
TRAINING_STATE = "training_state.pt"
# Checkpoints per forward in the high-level calls: large enough to be efficient, small enough
# for a laptop (the paper-size model at 256 x 93 tokens needs about 1 GiB of activations).
BLOCK = 256


class TrainedAutoencoder:
    """A WeightAutoencoder with the token layout and architecture it was trained for."""

    def __init__(
        self,
        model: WeightAutoencoder,
        config: AutoencoderConfig,
        architecture: Architecture,
        token_layout: TokenLayout,
        *,
        training_config: TrainingConfig | None = None,
        zoo: dict[str, Any] | None = None,
        training_log: list[dict[str, Any]] | None = None,
        evaluation: dict[str, Any] | None = None,
        device: torch.device | str = "cpu",
        code_version: str | None = None,
        directory: Path | None = None,
        normaliser: TokenNormaliser | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.config = config
        self.architecture = architecture
        self.token_layout = token_layout
        self.training_config = training_config
        self.zoo = zoo
        self.training_log = training_log or []
        self.evaluation = evaluation
        self.code_version = code_version
        self.directory = directory
        self.positions = token_layout.positions.to(self.device)
        # The model reads and writes standardised tokens; every call below takes and returns real
        # ones. None (and artefacts saved before normalisation existed): the identity.
        self.normaliser = normaliser or TokenNormaliser.identity(token_layout)

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def seed(self) -> int | None:
        return None if self.training_config is None else self.training_config.seed

    # ---- files ----------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """The content of config.json."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "autoencoder": self.config.to_dict(),
            "training": None if self.training_config is None else self.training_config.to_dict(),
            "token_layout": self.token_layout.to_dict(),
            "token_normaliser": self.normaliser.to_dict(),
            "architecture": self.architecture.to_dict(),
            "zoo": self.zoo,
            "seed": self.seed,
            "code_version": self.code_version or code_version(),
            "n_parameters": self.model.n_parameters,
        }

    def save(self, directory: str | Path) -> Path:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        weights = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        save_file(weights, out / WEIGHTS, metadata={"format": FORMAT})
        (out / CONFIG).write_text(json.dumps(self.describe(), indent=2) + "\n")
        (out / TRAINING_LOG).write_text("".join(json.dumps(e) + "\n" for e in self.training_log))
        if self.evaluation is not None:
            self.save_evaluation(self.evaluation, out)
        self.directory = out
        return out

    def save_evaluation(self, evaluation: dict[str, Any], directory: str | Path | None = None) -> Path:
        target = Path(directory) if directory is not None else self.directory
        if target is None:
            raise ArtefactError("the autoencoder has no directory yet: save() it first")
        self.evaluation = evaluation
        path = target / EVALUATION
        path.write_text(json.dumps(evaluation, indent=2) + "\n")
        return path

    @staticmethod
    def read_log(directory: str | Path) -> list[dict[str, Any]]:
        path = Path(directory) / TRAINING_LOG
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    @classmethod
    def load(cls, directory: str | Path, device: torch.device | str = "cpu") -> TrainedAutoencoder:
        folder = Path(directory)
        config_path, weights_path = folder / CONFIG, folder / WEIGHTS
        for path in (config_path, weights_path):
            if not path.exists():
                raise ArtefactError(f"{folder} is not an autoencoder artefact: {path.name} is missing")
        try:
            meta = json.loads(config_path.read_text())
        except json.JSONDecodeError as error:
            raise ArtefactError(f"{config_path} is not valid JSON: {error}") from error
        if meta.get("format") != FORMAT:
            raise ArtefactError(f"{config_path} does not describe a zooscope autoencoder")
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise ArtefactError(
                f"{folder} was written by a newer zooscope (format {meta['format_version']}); "
                f"this one reads format {FORMAT_VERSION}: upgrade zooscope"
            )
        try:
            config = AutoencoderConfig.from_dict(meta["autoencoder"])
            arch = Architecture.from_dict(meta["architecture"])
            described = meta["token_layout"]
            layout = TokenLayout.of(
                arch, width=described.get("width"), include_batchnorm=described.get("include_batchnorm", True)
            )
            training = TrainingConfig.from_dict(meta["training"]) if meta.get("training") else None
            normaliser = TokenNormaliser.from_dict(layout, meta.get("token_normaliser"))
        except (KeyError, TypeError, ValueError) as error:
            raise ArtefactError(f"{config_path} is incomplete or inconsistent: {error}") from error
        if described.get("n_tokens", layout.n_tokens) != layout.n_tokens:
            raise ArtefactError(
                f"{folder}: the token layout has {described['n_tokens']} tokens but this zooscope "
                f"tokenizes {arch.name} into {layout.n_tokens}: the artefact is from an incompatible version"
            )
        model = WeightAutoencoder(config, layout.width, layout.n_tokens)
        try:
            model.load_state_dict(load_file(weights_path))
        except (RuntimeError, OSError) as error:  # shapes or keys do not match the config, or a bad file
            raise ArtefactError(f"{weights_path} does not match {config_path}: {error}") from error
        evaluation_path = folder / EVALUATION
        evaluation = json.loads(evaluation_path.read_text()) if evaluation_path.exists() else None
        return cls(
            model,
            config,
            arch,
            layout,
            training_config=training,
            zoo=meta.get("zoo"),
            training_log=cls.read_log(folder),
            evaluation=evaluation,
            device=device,
            code_version=meta.get("code_version"),
            directory=folder,
            normaliser=normaliser,
        )

    # ---- stacked parameters ---------------------------------------------------------------------
    def tokens(self, params: StackedParams) -> torch.Tensor:
        """[K,T,W] input tokens of stacked parameters, on the autoencoder's device."""
        return self.token_layout.tokenize(to_device(params, self.device))

    @torch.no_grad()
    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Real tokens [K,T,W] -> per-token latents [K,T,L]."""
        return torch.cat(
            [
                self.model.encode_tokens(self.normaliser.normalise(tokens[s].to(self.device)), self.positions)
                for s in spans(tokens.shape[0], BLOCK)
            ]
        )

    @torch.no_grad()
    def latents(self, params: StackedParams) -> torch.Tensor:
        """Per-token latents [K,T,L] of stacked parameters."""
        return torch.cat(
            [self.encode_tokens(self.tokens(take(params, s))) for s in spans(n_models(params), BLOCK)]
        )

    @torch.no_grad()
    def embed_params(self, params: StackedParams) -> torch.Tensor:
        """One embedding per checkpoint [K,L]: the mean of its token latents."""
        return self.latents(params).mean(dim=1)

    @torch.no_grad()
    def decode_tokens(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [K,T,L] -> real tokens [K,T,W] (the decoder's output de-standardised, padding
        included as the decoder wrote it)."""
        self._check_latents(latents)
        return torch.cat(
            [
                self.normaliser.denormalise(self.model.decode(latents[s].to(self.device), self.positions))
                for s in spans(latents.shape[0], BLOCK)
            ]
        )

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor, reference: StackedParams | None = None) -> StackedParams:
        """latents [K,T,L] -> runnable stacked parameters. `reference` supplies what the tokens do
        not carry (BatchNorm statistics when they were not tokenized); default: a fresh module's."""
        tokens = self.decode_tokens(latents)
        if reference is not None:
            reference = to_device(reference, self.device)
        elif self.token_layout.needs_reference:
            fresh = reference_state_dict(self.architecture)
            reference = {k: fresh[k].unsqueeze(0).to(self.device) for k in self.token_layout.flat_layout.keys}
        return self.token_layout.detokenize(tokens, reference=reference)

    @torch.no_grad()
    def reconstruct_tokens(self, params: StackedParams) -> torch.Tensor:
        """The decoder's raw output tokens [K,T,W] for stacked parameters (padding included)."""
        return torch.cat(
            [
                self.decode_tokens(self.encode_tokens(self.tokens(take(params, s))))
                for s in spans(n_models(params), BLOCK)
            ]
        )

    @torch.no_grad()
    def reconstruct_params(self, params: StackedParams) -> StackedParams:
        """Stacked parameters through encoder and decoder; untokenized tensors come from `params`."""
        parts = []
        for s in spans(n_models(params), BLOCK):
            sub = to_device(take(params, s), self.device)
            parts.append(self.token_layout.detokenize(self.reconstruct_tokens(sub), reference=sub))
        return concat(parts)

    def _check_latents(self, latents: torch.Tensor) -> None:
        expected = self.config.latent_shape(self.token_layout.n_tokens)
        if latents.dim() != 3 or tuple(latents.shape[1:]) != expected:
            raise ArchitectureMismatchError(
                f"latents of shape {list(latents.shape)} do not fit this autoencoder: it expects "
                f"[K, {expected[0]}, {expected[1]}] ({self.architecture.name})"
            )

    # ---- state_dicts ----------------------------------------------------------------------------
    def stack(self, state_dicts: Sequence[dict[str, torch.Tensor]]) -> StackedParams:
        """K state_dicts -> stacked parameters, with an error that names this autoencoder's architecture."""
        if not state_dicts:
            raise ArchitectureMismatchError("no checkpoints given")
        for i, sd in enumerate(state_dicts):
            try:
                check_state_dict(self.architecture, sd, label=f"checkpoint {i}")
            except ArchitectureMismatchError as error:
                raise ArchitectureMismatchError(
                    f"{error}; this autoencoder was trained on {self.architecture.name} checkpoints"
                ) from error
        return stack_state_dicts(self.architecture, state_dicts)

    def embed(self, state_dicts: Sequence[dict[str, torch.Tensor]]) -> torch.Tensor:
        """Embeddings [K, L] (mean-pooled token latents) of K checkpoints, on the CPU."""
        return self.embed_params(self.stack(state_dicts)).cpu()

    def reconstruct(self, state_dicts: Sequence[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
        """Reconstructed state_dicts on the CPU. Tensors the tokens do not carry (num_batches_tracked,
        untokenized BatchNorm statistics) are copied from the input; dtypes follow the input."""
        rebuilt = self.reconstruct_params(self.stack(state_dicts))
        out = []
        for i, sd in enumerate(state_dicts):
            result = {key: value.detach().clone() for key, value in sd.items()}
            for key, value in rebuilt.items():
                result[key] = value[i].detach().to("cpu", sd[key].dtype).contiguous()
            out.append(result)
        return out
