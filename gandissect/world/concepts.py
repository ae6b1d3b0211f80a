"""The concept vocabulary of SceneWorld: what each label number means, per category.

Labels are numbered per category, 1-based, in the order listed here; 0 means "none".
The same name may appear in two categories (object ``water`` and material ``water``):
they are different concepts, told apart by their category.
"""

from __future__ import annotations

from dataclasses import dataclass

from gandissect.errors import UserError

CATEGORIES: tuple[str, ...] = ("object", "part", "material", "color", "scene")
PIXEL_CATEGORIES: tuple[str, ...] = ("object", "part", "material", "color")

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Concept:
    """One labelled concept: ``code`` is its 1-based label within ``category``."""

    name: str
    category: str
    code: int
    color: RGB


_TABLE: dict[str, tuple[tuple[str, RGB], ...]] = {
    "object": (
        ("sky", (120, 180, 235)),
        ("cloud", (235, 235, 245)),
        ("sun", (255, 220, 60)),
        ("mountain", (120, 100, 140)),
        ("tree", (30, 120, 40)),
        ("building", (190, 90, 60)),
        ("dome", (60, 170, 160)),
        ("tower", (150, 60, 150)),
        ("water", (30, 70, 200)),
        ("road", (90, 90, 90)),
        ("grass", (130, 210, 80)),
        ("fence", (230, 150, 40)),
    ),
    "part": (
        ("window", (80, 160, 255)),
        ("door", (160, 60, 20)),
        ("roof", (220, 40, 60)),
    ),
    "material": (
        ("brick", (180, 50, 30)),
        ("plaster", (240, 220, 170)),
        ("stone", (140, 140, 130)),
        ("glass", (90, 200, 230)),
        ("foliage", (40, 160, 40)),
        ("water", (20, 60, 180)),
    ),
    # Legend colours are the colour names' own hues.
    "color": (
        ("black", (10, 10, 10)),
        ("blue", (40, 90, 220)),
        ("brown", (120, 75, 35)),
        ("green", (50, 160, 50)),
        ("grey", (128, 128, 128)),
        ("orange", (245, 145, 30)),
        ("pink", (245, 160, 190)),
        ("purple", (130, 50, 160)),
        ("red", (210, 30, 30)),
        ("white", (245, 245, 245)),
        ("yellow", (245, 225, 40)),
    ),
    "scene": (
        ("church", (150, 60, 150)),
        ("house", (190, 90, 60)),
        ("street", (90, 90, 90)),
        ("forest", (30, 120, 40)),
        ("lake", (30, 70, 200)),
        ("mountain_valley", (120, 100, 140)),
    ),
}


def _build() -> tuple[Concept, ...]:
    return tuple(
        Concept(name, category, code, color)
        for category in CATEGORIES
        for code, (name, color) in enumerate(_TABLE[category], start=1)
    )


CONCEPTS: tuple[Concept, ...] = _build()


def concepts(category: str) -> tuple[Concept, ...]:
    """All concepts of one category, ordered by code (code 1 first)."""
    if category not in CATEGORIES:
        raise UserError(f"unknown category {category!r}; valid: {', '.join(CATEGORIES)}")
    return tuple(c for c in CONCEPTS if c.category == category)


def concept(name: str, category: str | None = None) -> Concept:
    """Look a concept up by name; pass ``category`` when the name is in several categories."""
    pool = concepts(category) if category is not None else CONCEPTS
    found = [c for c in pool if c.name == name]
    if len(found) == 1:
        return found[0]
    if found:
        cats = ", ".join(c.category for c in found)
        raise UserError(f"concept {name!r} is in several categories ({cats}); pass category=")
    valid = ", ".join(sorted({c.name for c in pool}))
    where = f" in category {category!r}" if category else ""
    raise KeyError(f"unknown concept {name!r}{where}; valid names: {valid}")


def code_of(name: str, category: str) -> int:
    """The 1-based label code of ``name`` within ``category``."""
    return concept(name, category).code


def palette(category: str) -> list[RGB]:
    """Legend colours indexed by label code; index 0 (none) is black."""
    return [(0, 0, 0)] + [c.color for c in concepts(category)]
