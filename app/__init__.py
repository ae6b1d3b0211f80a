"""The gandissect Gradio app (paint to add or remove objects, browse units, explain classifiers).

The app holds no algorithm: every action is a call into the ``gandissect`` library. Its pages
arrive with the app issue; until then ``gandissect world sample`` is the entry point.
"""
