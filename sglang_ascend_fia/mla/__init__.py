"""DeepSeek-V2/V3 (MLA) attention on FIA: the split latent/rope KV pool, the attention backend
and the DeepSeek forward steps that feed it."""
