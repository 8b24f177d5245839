"""CogVideoX-5B through diffusers (joint ``[text, video]`` attention, 3D RoPE from the pipeline)."""
