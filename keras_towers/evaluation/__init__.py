"""Evaluation for any model with `encode_images` / `encode_texts`.

Zero-shot classification, image-text retrieval and linear probes use only
those two methods, so they work for every keras_towers method (CLIP, SigLIP,
LiT, Three Towers, ASIF...) and for any other object that has them.

Example:

```python
import keras_towers
from keras_towers import evaluation

model = keras_towers.CLIP.tiny()
images, captions, labels = keras_towers.datasets.make_shapes(32)
names = keras_towers.datasets.shape_class_names()
evaluation.evaluate_zero_shot(model, images, labels, names, verbose=0)
evaluation.evaluate_retrieval(model, images, captions, verbose=0)
```
"""

from keras_towers.evaluation.linear_probe import linear_probe
from keras_towers.evaluation.report import plot_confusion_matrix
from keras_towers.evaluation.report import plot_history
from keras_towers.evaluation.report import plot_retrieval_grid
from keras_towers.evaluation.report import plot_text_to_image_grid
from keras_towers.evaluation.retrieval import evaluate_retrieval
from keras_towers.evaluation.templates import TEMPLATE_SETS
from keras_towers.evaluation.templates import fill_templates
from keras_towers.evaluation.templates import get_templates
from keras_towers.evaluation.zero_shot import classify
from keras_towers.evaluation.zero_shot import evaluate_zero_shot
from keras_towers.evaluation.zero_shot import fitting_templates
from keras_towers.evaluation.zero_shot import score_rule
from keras_towers.evaluation.zero_shot import zero_shot_classifier

__all__ = [
    "TEMPLATE_SETS",
    "classify",
    "score_rule",
    "evaluate_retrieval",
    "evaluate_zero_shot",
    "fitting_templates",
    "fill_templates",
    "get_templates",
    "linear_probe",
    "plot_confusion_matrix",
    "plot_history",
    "plot_retrieval_grid",
    "plot_text_to_image_grid",
    "zero_shot_classifier",
]
