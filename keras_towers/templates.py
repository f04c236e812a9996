"""Prompt templates for zero-shot classification.

A template is a string with exactly one `"{}"` where the class name goes:
`"a photo of a {}."`. Zero-shot classifiers average the text embeddings of
every template filled with a class name (prompt ensembling, Radford et al.,
2021, section 3.1.4).

Plain data and two pure functions, below every model: `keras_towers.evaluation`
re-exports them, and ASIF's own zero-shot head resolves the same set names.
"""

from __future__ import annotations

from collections.abc import Sequence

# The 80 prompts CLIP's authors used for ImageNet zero-shot evaluation.
OPENAI_IMAGENET_TEMPLATES = (
    "a bad photo of a {}.",
    "a photo of many {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)

# The 7-template subset CLIP's prompt-engineering notebook found by a greedy
# search on ImageNet: almost all of the ensemble's gain at 1/11th the cost.
BEST7_TEMPLATES = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)

# The default templates of the evaluation sets whose class names do not fit
# "a photo of a {}." (`keras_towers.datasets.classification_metadata`).
# CLIP's own MNIST prompt, for class names "0".."9".
DIGITS_TEMPLATES = ('a photo of the number: "{}".',)
# Country names ("Japan", "Saint Lucia").
FLAGS_TEMPLATES = ("a flag of {}.", "the flag of {}.", "a picture of the flag of {}.")
# CLDR emoji names ("grinning face", "flag: Japan", "keycap: 1").
EMOJI_TEMPLATES = ("{}", "a {} emoji.", "a 3D rendering of {}.")

TEMPLATE_SETS = {
    "openai": OPENAI_IMAGENET_TEMPLATES,
    "best7": BEST7_TEMPLATES,
    "simple": ("a photo of a {}.",),
    "none": ("{}",),
    "digits": DIGITS_TEMPLATES,
    "flags": FLAGS_TEMPLATES,
    "emoji": EMOJI_TEMPLATES,
}


def get_templates(templates: str | Sequence[str]) -> list[str]:
    """Resolve a template-set name or a list of templates.

    Args:
        templates: str or list of str. A set name (`"openai"`: CLIP's 80
            ImageNet prompts; `"best7"`: the 7-prompt subset CLIP's notebook
            recommends; `"simple"`: `["a photo of a {}."]`; `"none"`: the bare
            class name; `"digits"`, `"flags"`, `"emoji"`: the defaults of
            the evaluation sets of those names, see `TEMPLATE_SETS`), or a
            list of strings that each contain exactly one `"{}"`.

    Returns:
        A new list of template strings.

    Example:

    ```python
    keras_towers.evaluation.get_templates("best7")[0]  # "itap of a {}."
    keras_towers.evaluation.get_templates(["a drawing of a {}."])
    ```
    """
    if isinstance(templates, str):
        if templates not in TEMPLATE_SETS:
            raise ValueError(
                f"Unknown template set {templates!r}. Expected one of "
                f"{sorted(TEMPLATE_SETS)}, or a list of strings each containing "
                'exactly one "{}".'
            )
        return list(TEMPLATE_SETS[templates])
    return check_template_list(templates)


def check_template_list(templates, slot: str = "the class name") -> list[str]:
    """`templates` as a new list, after checking that it is a non-empty
    sequence of strings that each contain exactly one `"{}"` (where `slot`
    goes, for the error message)."""
    if isinstance(templates, str) or not isinstance(templates, Sequence):
        raise TypeError(
            "`templates` must be a template-set name or a list of strings. "
            f"Received {type(templates).__name__}."
        )
    templates = list(templates)
    if not templates:
        raise ValueError("`templates` must contain at least one template.")
    for i, template in enumerate(templates):
        if not isinstance(template, str):
            raise TypeError(
                f"`templates[{i}]` must be a string. Received "
                f"{type(template).__name__}: {template!r}."
            )
        # str.format would also accept "{0}" or choke on stray braces; require
        # the one literal placeholder so `template.replace` is unambiguous.
        if template.count("{}") != 1:
            raise ValueError(
                f'`templates[{i}]` must contain exactly one "{{}}" where {slot} '
                f"goes. Received {template!r}."
            )
    return templates


def fill_templates(templates: Sequence[str], class_name: str) -> list[str]:
    """Every template with `class_name` in its `"{}"` slot.

    Uses plain replacement, so class names with braces are inserted verbatim.

    Example:

    ```python
    keras_towers.evaluation.fill_templates(["a photo of a {}."], "cat")
    ```
    """
    return [t.replace("{}", class_name, 1) for t in templates]
