"""The subscription aggregate of the catalog: a customer on plan versions over time.

- ``domain``: Subscription, Phase, SubscriptionRef and their rules (pure: no grpc, no SQL).
- ``repository``: SQL of ``catalog.subscriptions`` and ``catalog.subscription_phases``.
- ``service``: the use cases (create, get, list, cancel, change plan), one transaction each,
  every write recorded in the catalog's change feed.

Protobuf conversion stays in services/catalog/mapping.py, the catalog's one mapping module.
"""
