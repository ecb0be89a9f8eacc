"""A dashboard: ipywidgets controls over one explorer function that returns a ``View``.

    dash = Dashboard(lsh_playground, {"tau": slider, "layernorm": checkbox, ...}, fixed={"seed": 0})
    dash.controls["tau"].value = 4      # what a user's click does: the function is re-run with the new value
    dash.result.stats["fraction_used"]  # the View it returned; dash.image.value holds its PNG
    dash.raise_error()                  # re-raise what the last update raised (None: it worked)

ipywidgets swallows exceptions raised inside a callback (it logs them where nobody looks). A Dashboard catches them
itself: ``error`` keeps the exception, the widget shows its traceback in red, and ``raise_error`` re-raises it — so
tests and notebooks can assert that every update worked. Sliders use ``continuous_update=False``: the figure is
redrawn when a slider is released, not at every pixel of a drag.
"""
from __future__ import annotations

import html
import traceback
from typing import Callable

from .view import View


def set_options(control, options: list, keep) -> None:
    """Give a selection control new ``options`` (only if they changed), selecting ``keep``: what a run explorer does
    when the chosen run changes and its layers or snapshot steps with it."""
    if list(control.options) != list(options):
        control.options = options
        control.value = keep


class Dashboard:
    """Controls (name → ipywidgets value widget, named after the function's arguments), an image, a stats table.

    ``link(dashboard, changed_name)`` may adjust other controls' options before the update (e.g. a new run has other
    layers and steps); changes it makes do not trigger extra updates. ``widget`` is the ipywidgets box to display;
    a Dashboard also displays itself in Jupyter.
    """

    def __init__(self, view: Callable[..., View], controls: dict, fixed: dict | None = None, title: str = "",
                 link: Callable[["Dashboard", str], None] | None = None, columns: int = 3):
        import ipywidgets as widgets

        self.view, self.controls, self.fixed, self.link = view, dict(controls), dict(fixed or {}), link
        self.result: View | None = None
        self.error: BaseException | None = None
        self.updates = 0
        self._holding = False
        self.image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
        self.table = widgets.HTML()
        self.error_box = widgets.HTML()
        for name, control in self.controls.items():
            control.observe(lambda change, name=name: self._changed(name), names="value")
        grid = widgets.GridBox(list(self.controls.values()),
                               layout=widgets.Layout(grid_template_columns=f"repeat({columns}, minmax(0, 1fr))"))
        header = widgets.HTML(f"<h4 style='margin:4px 0'>{html.escape(title)}</h4>") if title else widgets.HTML()
        self.widget = widgets.VBox([header, grid, self.error_box, self.image, self.table])
        self.widget.add_class("memlab-dashboard")
        if link is not None:
            self._hold(lambda: link(self, ""))
        self.update()

    # ------------------------------------------------------------------ state
    def kwargs(self) -> dict:
        """The arguments the next update passes: ``fixed`` plus every control's value."""
        return {**self.fixed, **{name: control.value for name, control in self.controls.items()}}

    def _hold(self, action) -> None:
        self._holding = True
        try:
            action()
        finally:
            self._holding = False

    def _changed(self, name: str) -> None:
        if self._holding:
            return
        if self.link is not None:
            try:
                self._hold(lambda: self.link(self, name))
            except Exception as e:  # noqa: BLE001 — shown in the widget and kept, never swallowed
                self._fail(e)
                return
        self.update()

    # ------------------------------------------------------------------ update
    def update(self) -> View | None:
        """Re-run the function with the controls' values; show the result, or keep and show the error."""
        self.updates += 1
        try:
            result = self.view(**self.kwargs())
            png, table = result.png(), result.html()
        except Exception as e:  # noqa: BLE001
            self._fail(e)
            return None
        self.error, self.result = None, result
        self.error_box.value = ""
        self.image.value = png
        self.table.value = table
        return result

    def _fail(self, e: BaseException) -> None:
        self.error = e
        text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
        self.error_box.value = (f"<pre style='color:#b00;white-space:pre-wrap'>{html.escape(type(e).__name__)}: "
                                f"{html.escape(str(e))}\n\n{html.escape(text)}</pre>")

    def raise_error(self) -> None:
        """Re-raise the exception of the last update, if it failed."""
        if self.error is not None:
            raise self.error

    def set(self, **values) -> View | None:
        """Set several controls at once with one update (then ``raise_error``): ``dash.set(tau=4, rank=2)``."""
        unknown = set(values) - set(self.controls)
        if unknown:
            raise ValueError(f"no control(s) {sorted(unknown)}; controls: {', '.join(self.controls)}")
        for name, value in values.items():
            self._hold(lambda: setattr(self.controls[name], "value", value))
            if self.link is not None:
                self._hold(lambda: self.link(self, name))
        result = self.update()
        self.raise_error()
        return result

    def _repr_mimebundle_(self, **kwargs):  # a Dashboard displays as its widget
        return self.widget._repr_mimebundle_(**kwargs)
