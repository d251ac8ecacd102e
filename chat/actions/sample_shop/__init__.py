"""SAMPLE DATA: the order API of Acorn & Pine, the fictional shop of the sample help centre
(chat/knowledge/sample/), so the sample actions (chat/actions/sample/actions.yaml) have a
back end to call on a fresh desk.

Served by the desk itself under /sample-shop/api/ while ACTIONS_SAMPLE_SHOP is on (by default
where the demo page is: `make run`), behind a bearer token (SAMPLE_SHOP_TOKEN):
- `orders`: six orders, A1001 to A1006, of three customers; cancellations are kept in Redis,
  so every process sees them (and a restarted Redis brings the orders back as shipped);
- `views`: GET orders/<id>?customer=<id> or ?email=<address>, POST orders/<id>/cancel?customer=<id>.
"""
