"""Wan2.1 (diffusers' ``WanTransformer3DModel``): the backbone around diffusers' modules (``backbone``) and the
adapter that hands its 3D self-attention to our processors through diffusers' processor API (``attention``)."""
