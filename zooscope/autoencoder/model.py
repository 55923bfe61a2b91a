"""The SANE-style transformer autoencoder over weight tokens (docs/method.md §3).

tokens [K,T,W] -> linear to d_model + position embedding -> transformer encoder -> linear to a
per-token latent [K,T,L] -> linear to d_model + position embedding -> transformer decoder ->
linear back to tokens [K,T,W]. A projection head maps the flattened latent sequence to 30
numbers for the contrastive loss.

Attention runs ACROSS THE TOKENS OF ONE MODEL: every transformer here is batch-first and is fed
[K, T, d], so model i's tokens never see model j's. The public SANE/"Structure is not enough"
code builds its layers batch-second but feeds them [batch, tokens, d], which makes attention run
across the models of a batch (and a model's reconstruction depend on its batch-mates). We
implement the intended design; tests check that a model's output ignores the rest of the batch.
"""

from __future__ import annotations

import torch
from torch import nn

from zooscope.autoencoder.config import AutoencoderConfig


class PositionEmbedding(nn.Module):
    """Learned embedding of the three token positions (global index, layer index, channel index).

    Global and layer embeddings are added into one half of d_model, the channel embedding fills the
    other half (concatenated), as in the paper: the channel half tells rows of one layer apart, the
    other half tells where in the network a token sits.
    """

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        half = config.d_model // 2
        n_global, n_layer, n_channel = config.max_positions
        self.max_positions = config.max_positions
        self.global_index = nn.Embedding(n_global, half)
        self.layer_index = nn.Embedding(n_layer, half)
        self.channel_index = nn.Embedding(n_channel, half)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        """positions [T,3] or [K,T,3] (long) -> [T,d] or [K,T,d]."""
        where = self.global_index(positions[..., 0]) + self.layer_index(positions[..., 1])
        return torch.cat([where, self.channel_index(positions[..., 2])], dim=-1)


class ProjectionHead(nn.Module):
    """Flattened latent sequence [K, n_tokens, L] -> projection_dim, two Linear -> LayerNorm -> ReLU
    blocks (n_tokens = 1 for a head on the mean-pooled embedding)."""

    def __init__(self, n_tokens: int, latent_dim: int, projection_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_tokens * latent_dim, projection_dim),
            nn.LayerNorm(projection_dim),
            nn.ReLU(),
            nn.Linear(projection_dim, projection_dim),
            nn.LayerNorm(projection_dim),
            nn.ReLU(),
        )

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.net(latents.flatten(start_dim=1))


def _transformer(
    config: AutoencoderConfig, n_layers: int, *, final_norm: bool = True
) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(
        d_model=config.d_model,
        nhead=config.n_heads,
        dim_feedforward=config.d_ff,
        dropout=config.dropout,
        activation="gelu",
        batch_first=True,  # [K, T, d]: attention across one model's tokens (see module docstring)
        norm_first=True,  # pre-norm: trains without a learning-rate warm-up
    )
    # enable_nested_tensor only helps padded batches; ours are dense (and it warns with norm_first).
    norm = nn.LayerNorm(config.d_model) if final_norm else None
    return nn.TransformerEncoder(layer, n_layers, norm=norm, enable_nested_tensor=False)


_LATENT_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "none": nn.Identity,
    "relu": nn.ReLU,
    "softplus": nn.Softplus,
}


class WeightAutoencoder(nn.Module):
    """Encoder, decoder and projection head for checkpoints of one token layout.

    `token_width` is W of the tokens, `n_tokens` is T (the projection head flattens [T, L], so it
    is tied to the sequence length; encoder and decoder alone work for any T within the tables).
    """

    def __init__(self, config: AutoencoderConfig, token_width: int, n_tokens: int) -> None:
        super().__init__()
        if n_tokens > config.max_positions[0]:
            raise ValueError(
                f"{n_tokens} tokens exceed the global position table ({config.max_positions[0]}); "
                "raise max_positions[0] or use a wider token width"
            )
        self.config = config
        self.token_width = token_width
        self.n_tokens = n_tokens
        d, latent = config.d_model, config.latent_dim
        # encoder
        self.token_in = nn.Linear(token_width, d)
        self.encoder_positions = PositionEmbedding(config)
        self.encoder = _transformer(config, config.n_encoder_layers, final_norm=config.encoder_final_norm)
        self.to_latent = nn.Linear(d, latent)
        self.latent_activation = _LATENT_ACTIVATIONS[config.latent_activation]()  # no parameters
        # decoder
        self.from_latent = nn.Linear(latent, d)
        self.decoder_positions = PositionEmbedding(config)
        self.decoder = _transformer(config, config.n_decoder_layers)
        self.token_out = nn.Linear(d, token_width)
        # A per-model latent (config.latent_tokens): learned queries whose encoder outputs are the
        # latent, and learned positions that tell the decoder's latent tokens apart; the decoder's
        # weight slots carry their position plus one shared learned "fill me" vector.
        self.n_latent_tokens, _ = config.latent_shape(n_tokens)
        if config.latent_tokens:
            self.latent_queries = nn.Parameter(torch.randn(config.latent_tokens, d) * 0.02)
            self.latent_positions = nn.Parameter(torch.randn(config.latent_tokens, d) * 0.02)
            self.slot_query = nn.Parameter(torch.zeros(d))
        # contrastive head
        pooled = config.contrast_on == "mean"
        self.projection = ProjectionHead(1 if pooled else self.n_latent_tokens, latent, config.projection_dim)

    def check_positions(self, positions: torch.Tensor) -> None:
        """Raise ValueError when a token layout does not fit the position tables. Called once per
        layout by the trainer and the artefact, not per forward (it would sync a GPU every step)."""
        limits = torch.tensor(self.config.max_positions, device=positions.device)
        if bool((positions.reshape(-1, 3) >= limits).any()):
            raise ValueError(
                f"token positions up to {positions.reshape(-1, 3).amax(0).tolist()} exceed the position "
                f"tables {list(self.config.max_positions)}"
            )

    def encode_tokens(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """tokens [K,T,W], positions [T,3] -> latents [K,T,L] per token, or [K,M,L] with
        config.latent_tokens = M (`embed` pools them)."""
        h = self.token_in(tokens) + self.encoder_positions(positions)
        if not self.config.latent_tokens:
            return self.latent_of(self.encoder(h))
        queries = self.latent_queries.expand(h.shape[0], -1, -1)
        encoded = self.encoder(torch.cat([queries, h], dim=1))
        return self.latent_of(encoded[:, : self.config.latent_tokens])

    def latent_of(self, encoded: torch.Tensor) -> torch.Tensor:
        """The encoder transformer's output [K,T,d_model] -> per-token latents [K,T,L]."""
        return self.latent_activation(self.to_latent(encoded))

    def decode(self, latents: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """latents [K,T,L] (or [K,M,L]), positions [T,3] -> tokens [K,T,W]."""
        if not self.config.latent_tokens:
            h = self.from_latent(latents) + self.decoder_positions(positions)
            return self.token_out(self.decoder(h))
        z = self.from_latent(latents) + self.latent_positions
        slots = (self.decoder_positions(positions) + self.slot_query).expand(latents.shape[0], -1, -1)
        decoded = self.decoder(torch.cat([z, slots], dim=1))
        return self.token_out(decoded[:, self.config.latent_tokens :])

    def embed(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """One vector per checkpoint for analysis: the mean of its latent tokens, [K,L]."""
        return self.encode_tokens(tokens, positions).mean(dim=1)

    def project(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [K,T,L] -> [K, projection_dim] for the contrastive loss: of the flattened
        sequence, or of the mean-pooled embedding (config.contrast_on)."""
        if self.config.contrast_on == "mean":
            latents = latents.mean(dim=1, keepdim=True)
        return self.projection(latents)

    def forward(
        self, tokens: torch.Tensor, positions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(reconstruction [K,T,W], latents [K,T,L], projection [K,projection_dim])."""
        latents = self.encode_tokens(tokens, positions)
        return self.decode(latents, positions), latents, self.project(latents)

    @property
    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
