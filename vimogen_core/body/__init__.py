"""Body models: SMPL parameters -> joints (and vertices), through smplx."""
from vimogen_core.body.model import (
    BodyModel,
    BodyOutput,
    SmplxBodyModel,
    body_model_from_env,
    default_body_model,
)

__all__ = ["BodyModel", "BodyOutput", "SmplxBodyModel", "body_model_from_env", "default_body_model"]
