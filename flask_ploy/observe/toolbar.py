"""A Flask-DebugToolbar panel listing the request's Ploy operations.

.. code-block:: python

    app.config["DEBUG_TB_PANELS"] = [
        *DebugToolbarExtension.default_panels(),  # or list them
        "flask_ploy.observe.toolbar.PloyPanel",
    ]

It shows :func:`~flask_ploy.observe.get_recorded_ops`, so operations are
listed only while ``PLOY_RECORD_OPS`` is on (by default, in debug mode).
"""

from __future__ import annotations

from typing import Any

from flask_debugtoolbar.panels import DebugPanel

from .recorder import dropped_ops, get_recorded_ops

TEMPLATE = """\
{% if not ops %}
<p>No Ploy operation in this request{% if not recording %}: PLOY_RECORD_OPS is off{% endif %}.</p>
{% else %}
<table class="flDebugTablesorter">
  <thead><tr><th>#</th><th>ms</th><th>Binding</th><th>Resource</th><th>Operation</th>
  <th>Key</th><th>Outcome</th><th>Detail</th></tr></thead>
  <tbody>
  {% for op in ops %}
    <tr class="{{ loop.cycle('flDebugOdd', 'flDebugEven') }}">
      <td>{{ loop.index }}</td>
      <td>{{ '%.3f'|format(op.duration * 1000) }}</td>
      <td>{{ op.binding }}</td><td>{{ op.resource }}</td><td>{{ op.op }}</td>
      <td><code>{{ op.key if op.key is not none else '' }}</code></td>
      <td>{{ op.outcome }}</td><td>{{ op.detail }}</td>
    </tr>
  {% endfor %}
  </tbody>
</table>
{% if dropped %}<p>{{ dropped }} more operations were not kept.</p>{% endif %}
{% endif %}
"""


class PloyPanel(DebugPanel):
    """The request's Ploy operations: binding, operation, key, time, outcome."""

    name = "Ploy"
    has_content = True

    def _summary(self) -> tuple[int, float]:
        ops = get_recorded_ops()
        return len(ops) + dropped_ops(), sum(op.duration for op in ops)

    def nav_title(self) -> str:
        return "Ploy"

    def nav_subtitle(self) -> str:
        n, seconds = self._summary()
        return f"{n} operation{'' if n == 1 else 's'} in {seconds * 1000:.2f} ms"

    def title(self) -> str:
        return "Ploy operations"

    def url(self) -> str:
        return ""

    def content(self) -> str:
        from flask import current_app

        ploy: Any = current_app.extensions.get("ploy")
        observer = ploy.app_bindings().observer if ploy is not None else None
        template = self.jinja_env.from_string(TEMPLATE)
        return str(
            template.render(
                ops=get_recorded_ops(),
                dropped=dropped_ops(),
                recording=observer is not None and observer.record,
            )
        )
