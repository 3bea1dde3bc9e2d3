"""The HTTP API by area: each area module's `routes` is one FastAPI `APIRouter` (`health`, `frames`,
`knowledge`, `chat`, `costs`, ...).

Every area's routes use `CheckedRoute` (one text rule for every JSON body); every area but health has
`authenticate` as a dependency of all its routes. `serve_app.http.create_app` assembles them into the app.
Routes reach the graph through the protocols of `serve_app.backends`, kept in `app.state`.
"""

API_VERSION = "0.1.0"
