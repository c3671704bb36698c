"""`flanmix studio`: a local web app to browse tasks, write templates with live previews, compose mixtures and
watch runs (docs/studio.md).

    config    the folders the studio may read and write, the per-launch token, path confinement
    tasks     the task table, a task's renders in every variant, the template editor's preview and save
    mixtures  mixture files: resolved tree, target shares, sampled plan rows, knobs (weights, caps)
    builds    a mixture build in a background process, with its progress
    runs      training runs (metrics.jsonl curves, eval reports) and ablations (results, plots)
    app       the Starlette app: routes, pages (Jinja, server-side), the token and host checks

Starlette and uvicorn come with the `studio` extra; nothing here is imported unless `flanmix studio` runs.
"""
