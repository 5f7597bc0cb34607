"""authz — an authentication decision service for reverse proxies.

The decision pipeline reads in the folder names::

    adapters/<proxy>  ->  request.CheckRequest  ->  policy/ (route, requirement tree)
        ->  authenticators/<type>  ->  decision.Decision  ->  adapters/<proxy>

``engine.DecisionEngine`` ties the steps together; ``app.create_app`` serves it.
"""

__version__ = "0.1.0"
