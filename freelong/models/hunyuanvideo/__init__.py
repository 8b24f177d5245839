"""HunyuanVideo through diffusers (MM-DiT: joint ``[video, text]`` attention, 3D RoPE, embedded guidance)."""
