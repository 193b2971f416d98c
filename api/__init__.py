"""The PVC REST API (``pvcapid``): a Falcon WSGI app under ``/api/v1`` served by waitress.

Routes are declared once (``pvc_api.spec.Route``, core table in ``pvc_api.routes``); the Falcon
resources and the OpenAPI document are generated from them. Plugins add routes through the
``pvc_api_routes(api)`` hook with ``api.add_route(Route(...))``.
"""
