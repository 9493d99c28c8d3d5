"""larpanda.viz: event displays (``viz.display.event_figure``), the simulator statistics page
(``viz.display.stats_report``, used by ``larpanda info --plot``) and the offline report (``viz.report`` the
page, ``viz.sections`` its sections, ``viz.plots`` its figures). Submodules are imported on demand (plotly is loaded only when a figure is built)."""
