"""A DeepSeek server whose sglang lacks one member of the deepseek-mla patch group.

The FIA MLA backend needs the DeepSeek forward steps and the split pool together
(``patches/deepseek_mla.toml``, ``mla_kv_pool.toml``, group ``deepseek-mla``). With any one
target gone (removed as sglang imports its module, in every process, as a renamed method or
class in a newer sglang would), the whole group is skipped, and the registry hands the model to
sglang's own backend. A forward step is found missing before any member applies (sglang imports
``deepseek_v2`` at start-up); the pool only when sglang first imports ``memory_pool_npu``, to
build the pool, and the forward steps applied by then are restored. On this CPU host sglang's
own backend cannot run (it imports torch_npu at top level), nor on the torch_npu stand-in,
where stock DeepSeek's NPU steps are never imported (tests/upstream/test_deepseek_standin.py);
stock sglang fails here with an ImportError traceback, and the plugin refuses instead, in one
line that names the group, the missing member and the hand-off, and the sglang mode it would
have run is the ATB mode. Never half the plugin: no FIA MLA backend serving without its forward
steps or pool.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from testbed.engine import testbed_env
from testbed.models import build_deepseek_v2_lite
from testbed.server import start_refusal

pytestmark = pytest.mark.engine

# The last line of a logged traceback: the exception's qualified name, then its message.
EXCEPTION_LINE = re.compile(r"^((?:\w+\.)*[A-Z]\w*(?:Error|Exception|Configuration)): ", re.M)

DEEPSEEK = "sglang.srt.models.deepseek_v2"
MEMBERS = {
    "fia-mla-deepseek-prepare": f"{DEEPSEEK}:DeepseekV2AttentionMLA.forward_prepare",
    "fia-mla-deepseek-core": f"{DEEPSEEK}:DeepseekV2AttentionMLA.forward_core",
    "fia-mla-kv-pool": "sglang.srt.hardware_backend.npu.memory_pool_npu:NPUMLATokenToKVPool",
}


@pytest.mark.parametrize("entry", list(MEMBERS))
def test_a_missing_group_member_hands_deepseek_off_whole(tmp_path: Path, entry: str) -> None:
    module, _, target = MEMBERS[entry].partition(":")
    env = testbed_env(ASCEND_USE_FIA="1", FIA_TESTBED_REMOVE_ATTRIBUTE=MEMBERS[entry])
    code, log = start_refusal(
        build_deepseek_v2_lite(),
        tmp_path / "server.log",
        env=env,
        attention_backend="ascend",
        page_size=128,
    )
    assert code is not None and code != 0, log[-3000:]
    assert "The server is fired up" not in log
    reason = f"patch group deepseek-mla is skipped: {entry}: {module} has no attribute '{target}'"
    skips = [line for line in log.splitlines() if reason in line and "sglang keeps its own" in line]
    assert skips, log[-3000:]
    # Every member is named in the skip line: none of the group applied.
    assert all(f":{t.partition(':')[2]}" in skips[0] for t in MEMBERS.values()), skips[0]
    assert "NPUMLATokenToKVPool" in skips[0]
    refusal = [line for line in log.splitlines() if "which needs torch_npu" in line]
    assert refusal and reason in refusal[-1], log[-3000:]
    assert "FIA MLA attention backend" not in log  # never half the plugin
    # The in-tree mode is decided before the pool exists, and already sees the group skipped
    # (plugin.group_unready_reason imports the members' modules first): the ATB mode, as with
    # ASCEND_USE_FIA=0, even when the member missing is the pool, found only at its import.
    handoffs = [line for line in log.splitlines() if "not FIA: " + reason in line]
    assert handoffs and all("ATB mode (as with ASCEND_USE_FIA=0)" in h for h in handoffs), log[
        -3000:
    ]
    # What ended start-up is the plugin's refusal, not a crash of half-patched code. (sglang's
    # scheduler logs the traceback of any start-up exception; its last line is the refusal.)
    errors = {m.group(1) for m in EXCEPTION_LINE.finditer(log)}
    assert errors == {"sglang_ascend_fia.fia_backend.base.UnsupportedConfiguration"}, errors
