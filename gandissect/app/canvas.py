"""The painting canvas: the scene as an ``<img>`` and the paint on a plain 2-D ``<canvas>`` above
it, in one ``gr.HTML`` with its own script, instead of Gradio's image editor.

Why not ``gr.ImageEditor``: it re-initialises its WebGL canvas whenever it receives a picture
(seconds, in a browser that renders it in software, as on any laptop without a GPU), and a
picture that arrives while it still processes the last one leaves it blank with "processing"
counting up, or drops the strokes painted meanwhile. In headless Chromium, a stroke, Draw or
Remove, Reset or Undo and a new scene, half a second apart, left it busy (its timer still
running 20 s later) after 16 and 18 of 20 such sequences in two runs. Here a reply replaces two
``<img>`` and one empty ``<canvas>``: nothing initialises, and the paint lives in the page's
script, not in the element, so it survives every reply that does not apply it.

The protocol, for a press of Remove or Draw (and for API clients, who send the same value):

- the page runs ``COLLECT`` first (Gradio's ``js=``): the paint input becomes
  ``{"strokes": [ids], "mask": "data:image/png;base64,..."}``, the strokes not applied yet,
  drawn opaque on a transparent canvas of the display size (a bare data URL works too);
- the reply's canvas carries ``data-applied="ids"`` and the page forgets exactly those
  strokes, keeping any painted while the press ran; a reply to a new scene, Undo or Reset
  carries ``data-clear="all"`` and the paint goes, as it belonged to the picture before;
- every reply has a new ``data-version``, so the page always sees it as new.

The widget also has a brush size, a Before / After toggle (the original, with the cells each
stroke edited tinted, against the edited scene) and Clear paint. The ids ``paint-canvas`` (the
component) and ``edited-image`` (the edited scene's ``<img>`` wrapper) stay as browser tests
and users' scripts know them.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from collections.abc import Sequence

import numpy as np

from gandissect.errors import UserError

__all__ = ["COLLECT", "SCRIPT", "STYLE", "canvas_html", "paint_value", "png_data_uri",
           "read_paint"]

PAINT = "rgba(255, 0, 255, 0.55)"  # the paint as shown; the mask sent is its alpha

STYLE = """
#paint-canvas .gd-stage {position: relative; touch-action: none; user-select: none;}
#paint-canvas .gd-stage > div {position: absolute; inset: 0;}
#paint-canvas .gd-stage > div[hidden] {display: none;}
#paint-canvas .gd-stage img {width: 100%; height: 100%; margin: 0; image-rendering: pixelated;
  pointer-events: none;}
#paint-canvas .gd-stage canvas {position: absolute; inset: 0; width: 100%; height: 100%;
  cursor: crosshair;}
#paint-canvas .gd-tools {display: flex; gap: 8px; align-items: center; margin-top: 6px;
  font-size: 13px;}
#paint-canvas .gd-tools button {padding: 1px 8px; border: 1px solid #999; border-radius: 4px;
  background: #f4f4f5; cursor: pointer; font-size: 13px; white-space: nowrap;}
#paint-canvas .gd-tools input {width: 90px;}
#paint-canvas .gd-view {font-weight: 600; min-width: 150px;}
"""

# Runs once, when the component loads (``element``: its root, which outlives every reply;
# ``watch``: Gradio calls back after each new value is rendered). Pointer events are taken at
# the root, so they reach whatever canvas the latest reply put there.
SCRIPT = """
const P = window.gandissectPaint || (window.gandissectPaint = {
  strokes: [], next: 1, radius: null, view: 'after', hover: null, drawing: null, seen: 0});
P.element = element;
const root = () => element.querySelector('.gd-paint');
const ink = () => element.querySelector('canvas.gd-ink');
function trace(g, s) {
  g.lineWidth = 2 * s.radius;
  g.beginPath();
  g.arc(s.points[0][0], s.points[0][1], s.radius, 0, 2 * Math.PI);
  g.fill();
  if (s.points.length > 1) {
    g.beginPath();
    g.moveTo(s.points[0][0], s.points[0][1]);
    for (const [x, y] of s.points.slice(1)) g.lineTo(x, y);
    g.stroke();
  }
}
function paint(g, color) {
  g.fillStyle = color; g.strokeStyle = color; g.lineCap = 'round'; g.lineJoin = 'round';
  for (const s of P.strokes) trace(g, s);
}
function draw() {
  const c = ink(); if (!c) return;
  const g = c.getContext('2d');
  g.clearRect(0, 0, c.width, c.height);
  paint(g, '__PAINT__');
  if (P.hover && !P.drawing) {
    g.beginPath(); g.lineWidth = 1.5; g.strokeStyle = 'rgba(255, 255, 255, 0.9)';
    g.arc(P.hover[0], P.hover[1], P.radius, 0, 2 * Math.PI); g.stroke();
  }
}
function at(e, c) {
  const b = c.getBoundingClientRect();
  return [(e.clientX - b.left) * c.width / b.width, (e.clientY - b.top) * c.height / b.height];
}
function show() {
  const r = root(); if (!r) return;
  r.querySelector('.gd-after').hidden = P.view !== 'after';
  r.querySelector('.gd-before').hidden = P.view !== 'before';
  r.querySelector('.gd-view').textContent = P.view === 'after' ? 'After: the edit' :
    'Before: edited cells tinted';
  r.querySelector('.gd-toggle').textContent = P.view === 'after' ? 'Show before' : 'Show after';
}
function refresh() {
  const r = root(); if (!r) return;
  if (r.dataset.clear === 'all') P.strokes = [];
  const applied = (r.dataset.applied || '').split(',').filter(Boolean).map(Number);
  P.strokes = P.strokes.filter(s => !applied.includes(s.id));
  P.drawing = null; P.view = 'after'; P.seen += 1;
  const size = r.querySelector('.gd-size');
  if (P.radius === null) P.radius = Number(size.value);
  size.value = P.radius;
  show(); draw();
}
P.collect = () => {
  const c = ink();
  if (!c || !P.strokes.length) return '';
  const off = document.createElement('canvas');
  off.width = c.width; off.height = c.height;
  paint(off.getContext('2d'), '#ffffff');
  return JSON.stringify({strokes: P.strokes.map(s => s.id), mask: off.toDataURL('image/png')});
};
if (!element.dataset.gdReady) {
  element.dataset.gdReady = '1';
  element.addEventListener('pointerdown', e => {
    const c = e.target.closest && e.target.closest('canvas.gd-ink');
    if (!c || e.button !== 0) return;
    e.preventDefault();
    c.setPointerCapture(e.pointerId);
    P.drawing = {id: P.next++, radius: P.radius, points: [at(e, c)]};
    P.strokes.push(P.drawing);
    draw();
  });
  element.addEventListener('pointermove', e => {
    const c = ink(); if (!c) return;
    const p = at(e, c);
    if (P.drawing) P.drawing.points.push(p); else P.hover = p;
    draw();
  });
  const stop = () => { P.drawing = null; draw(); };
  element.addEventListener('pointerup', stop);
  element.addEventListener('pointercancel', stop);
  element.addEventListener('pointerleave', () => { P.hover = null; draw(); });
  element.addEventListener('input', e => {
    if (e.target.classList.contains('gd-size')) { P.radius = Number(e.target.value); draw(); }
  });
  element.addEventListener('click', e => {
    if (e.target.classList.contains('gd-toggle')) {
      P.view = P.view === 'after' ? 'before' : 'after'; show();
    } else if (e.target.classList.contains('gd-clear')) {
      P.strokes = []; draw();
    }
  });
}
watch('value', refresh);
refresh();
""".replace("__PAINT__", PAINT)

# The Remove and Draw buttons' ``js=``: their second input (the paint) becomes what the canvas
# holds; the others pass through (a ``gr.State`` input is null in the page and kept server-side).
COLLECT = ("(...inputs) => { const P = window.gandissectPaint; "
           "inputs[1] = P ? P.collect() : ''; return inputs; }")


def png_data_uri(picture: np.ndarray) -> str:
    """A ``(H, W, 3)`` or ``(H, W, 4)`` uint8 picture as a PNG data URI."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def paint_value(mask: np.ndarray, scale: int = 1, strokes: Sequence[int] = (1,)) -> str:
    """What the page sends for a press (``COLLECT``), for scripts and API clients: ``mask``
    (``(H, W)``, true where painted) enlarged ``scale`` times to the canvas, drawn opaque on a
    transparent PNG, with the ids of the strokes it holds."""
    mask = np.asarray(mask, dtype=bool)
    big = np.repeat(np.repeat(mask, scale, 0), scale, 1)
    layer = np.zeros((*big.shape, 4), np.uint8)
    layer[big] = 255
    return json.dumps({"strokes": [int(s) for s in strokes], "mask": png_data_uri(layer)})


def canvas_html(after: np.ndarray, before: np.ndarray, side: int, version: int,
                clear: bool, applied: Sequence[int] = (), radius: int = 12) -> str:
    """The widget: ``after`` (the edited scene) and ``before`` (the original with its edited
    cells tinted), both at the generator's resolution and shown ``side`` pixels wide (nearest
    enlargement); ``clear``: the paint goes (a new scene, Undo, Reset); ``applied``: the ids
    of the strokes this reply applied; ``radius``: the brush's first radius in display
    pixels."""
    return (
        f'<div class="gd-paint" data-side="{side}" data-version="{version}" '
        f'data-clear="{"all" if clear else ""}" '
        f'data-applied="{",".join(str(int(i)) for i in applied)}">'
        f'<div class="gd-stage" style="width:{side}px;height:{side}px">'
        f'<div id="edited-image" class="gd-after"><img alt="the edited scene" '
        f'src="{png_data_uri(after)}"></div>'
        f'<div id="before-image" class="gd-before" hidden><img alt="the original scene, the '
        f'cells each stroke edited tinted" src="{png_data_uri(before)}"></div>'
        f'<canvas class="gd-ink" width="{side}" height="{side}" '
        f'aria-label="paint here, then press Remove or Draw"></canvas></div>'
        f'<div class="gd-tools"><span class="gd-view">After: the edit</span>'
        f'<label>Brush <input class="gd-size" type="range" min="2" max="{max(8, side // 6)}" '
        f'value="{radius}"></label>'
        f'<button class="gd-toggle" type="button">Show before</button>'
        f'<button class="gd-clear" type="button">Clear paint</button></div></div>')


def read_paint(value: object, side: int) -> tuple[np.ndarray | None, list[int]]:
    """The painted ``(side, side)`` mask in a value ``COLLECT`` made (or a bare PNG data URI),
    and the ids of its strokes; ``(None, [])`` when nothing is painted. A value that is not
    such paint is a ``UserError`` saying so."""
    if value is None or value == "":
        return None, []
    text = str(value)
    strokes: list[int] = []
    if not text.startswith("data:"):
        try:
            packet = json.loads(text)
            text, strokes = packet["mask"], [int(i) for i in packet.get("strokes", [])]
        except (ValueError, TypeError, KeyError):
            raise UserError("the paint could not be read: paint on the canvas again") from None
    mask = _alpha(text)
    if mask.shape != (side, side):
        raise UserError(f"the paint is {mask.shape[1]}x{mask.shape[0]} pixels; the canvas is "
                        f"{side}x{side}")
    return (mask if mask.any() else None), strokes


def _alpha(uri: str) -> np.ndarray:
    """Where a PNG data URI is not transparent, as an ``(H, W)`` bool array."""
    from PIL import Image, UnidentifiedImageError

    header, _, data = uri.partition(",")
    if not header.startswith("data:image/png;base64"):
        raise UserError("the paint must be a PNG data URI (data:image/png;base64,...)")
    try:
        with Image.open(io.BytesIO(base64.b64decode(data, validate=True))) as image:
            return np.asarray(image.convert("RGBA"))[..., 3] > 0
    except (binascii.Error, UnidentifiedImageError, OSError):
        raise UserError("the paint could not be read: paint on the canvas again") from None
