"""Generated multi-shard float checkpoints, and the peak RSS of a child process.

``write_qwen2_shards`` writes a Qwen2-shaped HF checkpoint of random weights split into several
``model-0000i-of-0000n.safetensors`` shards with ``model.safetensors.index.json``, without
building the model (so it can be hundreds of MB quickly). Its config is complete enough for
transformers to load it. ``run_measured`` runs a Python module in a child process and returns
the child's own peak RSS.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch


def qwen2_tensor_shapes(
    hidden: int, intermediate: int, layers: int, vocab: int, heads: int, kv_heads: int
) -> dict[str, tuple[int, ...]]:
    """HF Qwen2 tensor names -> shapes, in checkpoint order (biases on q/k/v, as Qwen2 has)."""
    head_dim = hidden // heads
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}"
        shapes |= {
            f"{p}.input_layernorm.weight": (hidden,),
            f"{p}.self_attn.q_proj.weight": (heads * head_dim, hidden),
            f"{p}.self_attn.q_proj.bias": (heads * head_dim,),
            f"{p}.self_attn.k_proj.weight": (kv_heads * head_dim, hidden),
            f"{p}.self_attn.k_proj.bias": (kv_heads * head_dim,),
            f"{p}.self_attn.v_proj.weight": (kv_heads * head_dim, hidden),
            f"{p}.self_attn.v_proj.bias": (kv_heads * head_dim,),
            f"{p}.self_attn.o_proj.weight": (hidden, heads * head_dim),
            f"{p}.post_attention_layernorm.weight": (hidden,),
            f"{p}.mlp.gate_proj.weight": (intermediate, hidden),
            f"{p}.mlp.up_proj.weight": (intermediate, hidden),
            f"{p}.mlp.down_proj.weight": (hidden, intermediate),
        }
    shapes |= {"model.norm.weight": (hidden,), "lm_head.weight": (vocab, hidden)}
    return shapes


def write_qwen2_shards(
    directory: Path,
    *,
    hidden: int = 64,
    intermediate: int = 128,
    layers: int = 2,
    vocab: int = 512,
    heads: int = 4,
    kv_heads: int = 2,
    shards: int = 3,
    dtype: torch.dtype = torch.bfloat16,
    seed: int = 0,
    split_after: dict[str, int] | None = None,
) -> Path:
    """Write the checkpoint into ``directory``; tensors are cut into ``shards`` runs of about
    equal bytes (``split_after`` pins a tensor -> shard number instead)."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    shapes = qwen2_tensor_shapes(hidden, intermediate, layers, vocab, heads, kv_heads)
    itemsize = torch.empty((), dtype=dtype).element_size()
    total = sum(_numel(s) * itemsize for s in shapes.values())
    placement: dict[str, int] = {}
    running = 0
    for name, shape in shapes.items():
        placement[name] = min(shards - 1, running * shards // total)
        running += _numel(shape) * itemsize
    placement |= split_after or {}
    gen = torch.Generator().manual_seed(seed)
    names = [f"model-{i + 1:05d}-of-{shards:05d}.safetensors" for i in range(shards)]
    weight_map = {}
    for number, shard_name in enumerate(names):
        tensors = {}
        for name, shape in shapes.items():
            if placement[name] != number:
                continue
            if "norm" in name:
                tensors[name] = torch.ones(shape, dtype=dtype)
            else:
                tensors[name] = (torch.randn(shape, generator=gen) * 0.05).to(dtype)
            weight_map[name] = shard_name
        save_file(tensors, directory / shard_name, metadata={"format": "pt"})
        del tensors
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    config = {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "dtype": str(dtype).removeprefix("torch."),
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "max_position_embeddings": 4096,
        "rope_theta": 10000.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    (directory / "tokenizer_config.json").write_text("{}")
    return directory


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


@dataclass
class Measured:
    returncode: int
    stdout: str
    stderr: str
    peak_rss_bytes: int


# Runs a module as ``python -m`` would, then writes the process's VmHWM (peak RSS of its own
# address space, which exec starts afresh) to a file. rusage's ru_maxrss would not do: Linux
# carries a forked child's high-water mark across exec, so it starts at the parent's RSS.
_WRAPPER = """
import runpy, sys
report, module = sys.argv[1], sys.argv[2]
sys.argv = [module, *sys.argv[3:]]
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
finally:
    with open("/proc/self/status") as status, open(report, "w") as out:
        out.write(next(line for line in status if line.startswith("VmHWM:")).split()[1])
"""


def run_measured(module: str, args: list[str], env: dict[str, str] | None = None) -> Measured:
    """Run ``python -m module *args`` to completion: its output and its own peak RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "vmhwm"
        argv = [sys.executable, "-c", _WRAPPER, str(report), module, *args]
        done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        peak = int(report.read_text()) * 1024 if report.is_file() else 0  # kB
    return Measured(done.returncode, done.stdout, done.stderr, peak)
