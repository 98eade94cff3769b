"""Calling webhook receivers: the address check (API and operator) and the HTTP sender (operator).

`address` resolves a receiver's name once and checks every address it gives against the
policy (gentask.domain.webhooks); `sender` posts to exactly the addresses that were checked
(aiohttp with a resolver that only answers with them), so no second lookup can rebind a name to
a private address. Nothing here is imported by `gentask.webhooks` itself: the API imports
`address` only and never loads aiohttp through this package.
"""
