"""Front doors, one module per proxy protocol: parse the proxy's request into a
``CheckRequest``, render the ``Decision`` the way that proxy reads it. Only this
package knows about proxies."""
