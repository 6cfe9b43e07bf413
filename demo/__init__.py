"""``make demo``: the plugin generating through a real ``sglang.Engine`` on CPU (not shipped)."""
