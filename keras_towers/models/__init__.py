from keras_towers.models.asif import ASIF
from keras_towers.models.base import ContrastiveModel
from keras_towers.models.clip import CLIP
from keras_towers.models.clip import SigLIP
from keras_towers.models.lit import LiT
from keras_towers.models.protoclip import ProtoCLIP
from keras_towers.models.protoclip_episodes import ProtoCLIPEpisodes
from keras_towers.models.rocket import CLIPRocket
from keras_towers.models.three_towers import ThreeTowers

__all__ = [
    "ASIF",
    "CLIP",
    "ContrastiveModel",
    "LiT",
    "ProtoCLIP",
    "ProtoCLIPEpisodes",
    "CLIPRocket",
    "SigLIP",
    "ThreeTowers",
]
