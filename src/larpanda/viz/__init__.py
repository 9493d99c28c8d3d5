"""larpanda.viz: event displays (``viz.display.event_figure``), the simulator statistics page
(``viz.display.stats_report``, used by ``larpanda info --plot``) and the report figures (``viz.plots``,
``viz.report``). Submodules are imported on demand (plotly is loaded only when a figure is built)."""
