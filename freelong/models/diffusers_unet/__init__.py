"""diffusers' own video UNets (AnimateDiff's ``UNetMotionModel``, ModelScope/ZeroScope's ``UNet3DConditionModel``):
the backbone around diffusers' modules (``backbone``) and the adapter that hands their temporal attention to our
processors through diffusers' processor API (``attention``)."""
