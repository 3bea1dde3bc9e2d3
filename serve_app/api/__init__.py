"""The HTTP API by area: one `APIRouter` per area (`health`, `frames`, `knowledge`, `chat`, `costs`).

Every router uses `CheckedRoute` (one text rule for every JSON body); every area but health has
`authenticate` as a router-level dependency. `serve_app.http.create_app` assembles them into the app.
Routes reach the graph through the protocols of `serve_app.backends`, kept in `app.state`.
"""

API_VERSION = "0.1.0"
