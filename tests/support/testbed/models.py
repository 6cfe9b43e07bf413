"""Tiny random-weight Qwen2, DeepSeek-V2 and OLMo-3 checkpoints, built offline in a few seconds.

Each builder writes a normal HF directory (``config.json``, safetensors, tokenizer) that both
sglang and HF transformers load, so HF is an independent oracle for sglang's real model code.
Directories are cached by a hash of their config, so repeated test runs reuse them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[3]
CACHE_DIR = Path(os.environ.get("FIA_TESTBED_CACHE", REPO_ROOT / ".cache" / "models"))
VOCAB_SIZE = 512
_BUILDER_VERSION = 1  # bump to invalidate cached models after changing a builder

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Ascend NPUs run attention through the fused infer attention score kernel.",
    "SGLang schedules requests, caches prefixes in a radix tree and pages the KV cache.",
    "Prefill processes the prompt; decode generates one token per step for every request.",
    "A mixture of experts routes each token to the top k experts and sums their outputs.",
    "Multi-head latent attention compresses keys and values into a small latent vector.",
    "Grouped query attention shares each key value head among several query heads.",
    "Numbers like 0 1 2 3 4 5 6 7 8 9 10 100 1000 appear in text too.",
    "def forward(self, x): return self.proj(x) + x  # residual connection",
    "Once upon a time there was a tiny model that only knew random weights.",
]

# Plain English prompts for parity runs; encoded with the tiny tokenizer.
PROMPTS = [
    "The quick brown fox",
    "Ascend NPUs run attention",
    "SGLang schedules requests and caches prefixes",
    "Decode generates one token",
    "A mixture of experts routes each token",
    "Multi-head latent attention compresses",
    "Grouped query attention shares",
    "Once upon a time there was",
    "def forward(self, x):",
    "Numbers like 0 1 2 3",
]


def _key(kind: str, config: dict[str, Any], seed: int) -> str:
    blob = json.dumps({"kind": kind, "config": config, "seed": seed, "v": _BUILDER_VERSION})
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _build_tokenizer(directory: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
    )
    fast.save_pretrained(directory)


def _finish(model: torch.nn.Module, directory: Path, tmp: Path) -> Path:
    model.to(torch.bfloat16).save_pretrained(tmp)
    _build_tokenizer(tmp)
    if directory.exists():
        shutil.rmtree(tmp)
    else:
        tmp.rename(directory)  # atomic: a concurrent builder never sees a half-written model
    return directory


def _build(kind: str, config_kwargs: dict[str, Any], seed: int) -> Path:
    directory = CACHE_DIR / f"{kind}-{_key(kind, config_kwargs, seed)}"
    if (directory / "config.json").is_file():
        return directory
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = CACHE_DIR / f".{directory.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    torch.manual_seed(seed)
    if kind == "qwen2":
        from transformers import Qwen2Config, Qwen2ForCausalLM

        model: torch.nn.Module = Qwen2ForCausalLM(Qwen2Config(**config_kwargs))
    elif kind == "olmo3":
        from transformers import Olmo3Config, Olmo3ForCausalLM

        model = Olmo3ForCausalLM(Olmo3Config(**config_kwargs))
    else:
        from transformers import DeepseekV2Config, DeepseekV2ForCausalLM

        model = DeepseekV2ForCausalLM(DeepseekV2Config(**config_kwargs))
    # Random init has tiny logits; a larger spread makes greedy argmax decisive, so a token
    # mismatch means a real numerical difference rather than a near-tie.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2 and "norm" not in name:
                param.normal_(0.0, 0.08)
    _finish(model, directory, tmp)
    if kind == "deepseek_v2":
        _patch_deepseek_config(directory, config_kwargs)
    return directory


def _patch_deepseek_config(directory: Path, config_kwargs: dict[str, Any]) -> None:
    """transformers 5 drops DeepSeek-V2 keys that sglang 0.5.23 still reads; put them back."""
    path = directory / "config.json"
    data = json.loads(path.read_text())
    data.setdefault("scoring_func", config_kwargs.get("scoring_func", "softmax"))
    data.setdefault("aux_loss_alpha", 0.001)
    data.setdefault("seq_aux", True)
    data.setdefault("ep_size", 1)
    path.write_text(json.dumps(data, indent=2))


def qwen2_config(**overrides: Any) -> dict[str, Any]:
    """The tiny Qwen2 (hidden 64, 2 layers, 4 q heads, 2 kv heads); override any key."""
    config: dict[str, Any] = {
        "vocab_size": VOCAB_SIZE,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "rope_theta": 10000.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    config.update(overrides)
    return config


def deepseek_v2_config(**overrides: Any) -> dict[str, Any]:
    """The tiny DeepSeek-V2: MLA (kv_lora 32, rope 16), layer 0 dense, layer 1 MoE (4 experts)."""
    config: dict[str, Any] = {
        "vocab_size": VOCAB_SIZE,
        "hidden_size": 64,
        "intermediate_size": 128,
        "moe_intermediate_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "q_lora_rank": 48,
        "kv_lora_rank": 32,
        "qk_nope_head_dim": 16,
        "qk_rope_head_dim": 16,
        "v_head_dim": 16,
        "n_routed_experts": 4,
        "n_shared_experts": 1,
        "num_experts_per_tok": 2,
        "first_k_dense_replace": 1,
        "moe_layer_freq": 1,
        "n_group": 1,
        "topk_group": 1,
        "topk_method": "greedy",
        "norm_topk_prob": False,
        "routed_scaling_factor": 1.0,
        "scoring_func": "softmax",
        "max_position_embeddings": 4096,
        "rope_theta": 10000.0,
        # sglang's CPU rope only supports yarn; factor 1.0 makes it plain RoPE.
        "rope_scaling": {
            "type": "yarn",
            "rope_type": "yarn",
            "factor": 1.0,
            "original_max_position_embeddings": 4096,
            "beta_fast": 32,
            "beta_slow": 1,
            "mscale": 1.0,
            "mscale_all_dim": 1.0,
        },
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    config.update(overrides)
    return config


# The real DeepSeek attention dims (the FIA MLA kernels take no others) on a tiny body: two
# layers (dense, then MoE), hidden 128. MoE stays stock sglang in these models.
MLA_REAL_DIMS: dict[str, Any] = {
    "hidden_size": 128,
    "kv_lora_rank": 512,
    "qk_rope_head_dim": 64,
    "qk_nope_head_dim": 128,
    "v_head_dim": 128,
}


def deepseek_v2_lite_config(**overrides: Any) -> dict[str, Any]:
    """DeepSeek-V2-Lite-style attention: no q_lora, 16 query heads, kv_lora 512, rope 64."""
    config = deepseek_v2_config(
        **MLA_REAL_DIMS, num_attention_heads=16, num_key_value_heads=16, q_lora_rank=None
    )
    config.update(overrides)
    return config


def deepseek_v3_style_config(**overrides: Any) -> dict[str, Any]:
    """DeepSeek-V3-style attention: q_lora, 32 query heads, kv_lora 512, rope 64, and yarn rope
    scaling with V3's factor and mscale (softmax scale x mscale^2, cos/sin scaled)."""
    config = deepseek_v2_config(
        **MLA_REAL_DIMS,
        num_attention_heads=32,
        num_key_value_heads=32,
        q_lora_rank=96,
        rope_scaling={
            "type": "yarn",
            "rope_type": "yarn",
            "factor": 40.0,
            "original_max_position_embeddings": 4096,
            "beta_fast": 32,
            "beta_slow": 1,
            "mscale": 1.0,
            "mscale_all_dim": 1.0,
        },
        max_position_embeddings=4096,
    )
    config.update(overrides)
    return config


def build_deepseek_v2_lite(seed: int = 0, **overrides: Any) -> Path:
    return _build("deepseek_v2", deepseek_v2_lite_config(**overrides), seed)


def build_deepseek_v3_style(seed: int = 0, **overrides: Any) -> Path:
    return _build("deepseek_v2", deepseek_v3_style_config(**overrides), seed)


def build_qwen2(seed: int = 0, **overrides: Any) -> Path:
    return _build("qwen2", qwen2_config(**overrides), seed)


def olmo3_config(**overrides: Any) -> dict[str, Any]:
    """A tiny OLMo-3 whose every layer is a sliding-window layer (window 32 tokens).

    sglang serves it with ``Olmo2ForCausalLM`` (configs/olmo3.py:59-65), whose RadixAttention
    modules get ``sliding_window_size`` = window - 1 on sliding layers (models/olmo2.py:125-152);
    it is not a hybrid-SWA architecture, so sglang builds one plain MHA KV pool for it.
    """
    config = qwen2_config(
        num_key_value_heads=4,  # MHA, as OLMo checkpoints are
        sliding_window=32,
        layer_types=["sliding_attention", "sliding_attention"],
        pad_token_id=3,
    )
    # transformers gives sliding layers rope_theta 500000 unless told; sglang's Olmo3Config
    # reads one rope_theta for all layers, so both get the same one.
    theta = {"rope_theta": config["rope_theta"], "rope_type": "default"}
    config["rope_parameters"] = {"full_attention": theta, "sliding_attention": dict(theta)}
    config.update(overrides)
    return config


def build_olmo3(seed: int = 0, **overrides: Any) -> Path:
    return _build("olmo3", olmo3_config(**overrides), seed)


def build_deepseek_v2(seed: int = 0, **overrides: Any) -> Path:
    return _build("deepseek_v2", deepseek_v2_config(**overrides), seed)


def encode_prompts(model_dir: Path, prompts: list[str] | None = None) -> list[list[int]]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return [tokenizer.encode(p) for p in (prompts or PROMPTS)]


def token_stream(model_dir: Path, n: int, offset: int = 0) -> list[int]:
    """``n`` real token ids from the test prompts, cycled; ``offset`` picks a different text.

    Long prompts built this way share whole pages when they share a prefix, so a second request
    is served from sglang's radix cache."""
    ids = [t for p in encode_prompts(model_dir) for t in p]
    return [ids[(offset + i) % len(ids)] for i in range(n)]


# ---------------------------------------------------------------------------------------------
# MoE-focused DeepSeek models (issue 11): more experts, wider top-k, and a V3-style router.
# ---------------------------------------------------------------------------------------------


def deepseek_v2_lite_moe_config(**overrides: Any) -> dict[str, Any]:
    """A scaled-down DeepSeek-V2-Lite MoE: softmax gating, 2 shared experts, top-4 of 16 routed
    experts (V2-Lite: top-6 of 64), every layer after the first MoE."""
    config = deepseek_v2_config(
        num_hidden_layers=3,
        n_routed_experts=16,
        n_shared_experts=2,
        num_experts_per_tok=4,
        norm_topk_prob=False,
    )
    config.update(overrides)
    return config


def build_deepseek_v2_lite_moe(seed: int = 0, **overrides: Any) -> Path:
    return _build("deepseek_v2", deepseek_v2_lite_moe_config(**overrides), seed)


def deepseek_v3_moe_config(**overrides: Any) -> dict[str, Any]:
    """A scaled-down DeepSeek-V3 MoE: sigmoid gating with ``e_score_correction_bias``
    (noaux_tc), 4 groups of 4 experts keeping the top 2 groups, top-4, ``norm_topk_prob``,
    ``routed_scaling_factor`` 2.5 and one dense layer first (``first_k_dense_replace``)."""
    config = deepseek_v2_config(
        num_hidden_layers=3,
        n_routed_experts=16,
        n_shared_experts=1,
        num_experts_per_tok=4,
        n_group=4,
        topk_group=2,
        topk_method="noaux_tc",
        scoring_func="sigmoid",
        norm_topk_prob=True,
        routed_scaling_factor=2.5,
        first_k_dense_replace=1,
    )
    config.update(overrides)
    return config


def build_deepseek_v3_moe(seed: int = 0, bias_scale: float = 0.05, **overrides: Any) -> Path:
    """The V3-style model through HF's ``DeepseekV3ForCausalLM``, with a random nonzero
    ``e_score_correction_bias`` per MoE layer (a buffer, so the generic init leaves it 0)."""
    config_kwargs = deepseek_v3_moe_config(**overrides)
    key = _key("deepseek_v3", {**config_kwargs, "bias_scale": bias_scale}, seed)
    directory = CACHE_DIR / f"deepseek_v3-{key}"
    if (directory / "config.json").is_file():
        return directory
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = CACHE_DIR / f".{directory.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    torch.manual_seed(seed)
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    model = DeepseekV3ForCausalLM(DeepseekV3Config(**config_kwargs))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2 and "norm" not in name:
                param.normal_(0.0, 0.08)
        biases = [b for n, b in model.named_buffers() if n.endswith("e_score_correction_bias")]
        assert biases, "DeepseekV3ForCausalLM has no e_score_correction_bias buffer"
        for bias in biases:
            bias.normal_(0.0, bias_scale)
    _finish(model, directory, tmp)
    # sglang 0.5.23 reads these keys; transformers 5 drops them from the saved config.
    path = directory / "config.json"
    data = json.loads(path.read_text())
    for name in ("scoring_func", "topk_method", "n_group", "topk_group"):
        data.setdefault(name, config_kwargs[name])
    data.setdefault("aux_loss_alpha", 0.001)
    data.setdefault("seq_aux", True)
    data.setdefault("ep_size", 1)
    path.write_text(json.dumps(data, indent=2))
    return directory


def build_deepseek_v3_style_moe(seed: int = 0) -> Path:
    """V3-style attention (32 heads, q_lora, the real 512/64 MLA dims, yarn factor 40) on the V3
    MoE (sigmoid, grouped top-4 of 16 with correction bias): the FIA MLA backend and the MoE
    chain together, as a DeepSeek-V3 deployment runs them."""
    scaling = deepseek_v3_style_config()["rope_scaling"]
    return build_deepseek_v3_moe(
        seed,
        **MLA_REAL_DIMS,
        num_attention_heads=32,
        num_key_value_heads=32,
        q_lora_rank=96,
        rope_scaling=scaling,
    )
