from keras_towers.models.asif import ASIF
from keras_towers.models.base import ContrastiveModel
from keras_towers.models.clip import CLIP
from keras_towers.models.clip import SigLIP

__all__ = ["ASIF", "CLIP", "ContrastiveModel", "SigLIP"]
