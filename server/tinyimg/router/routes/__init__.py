"""The router's routes, one module per resource; ``tinyimg.router.app.ROUTERS`` lists them."""
