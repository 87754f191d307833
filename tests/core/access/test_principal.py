"""One rule for who may see and label what, whichever door the caller came in by."""

from core.access.clients import Caller
from core.access.merchants import Member
from core.access.principal import Principal
from core.store.tables import ActorRole, ClientRole


def test_a_client_and_a_merchant_see_their_own_tenant_and_an_admin_everyones():
    client = Caller(1, "acme", ClientRole.CLIENT, ()).principal
    admin = Caller(2, "ops", ClientRole.ADMIN, ()).principal
    merchant = Member(42, ActorRole.MERCHANT, "zh").principal
    boss = Member(7, ActorRole.ADMIN, "en").principal
    assert (client.scope, client.role) == ("acme", ActorRole.MERCHANT)
    assert (merchant.scope, merchant.actor) == ("telegram:42", "telegram:42")
    assert admin.scope is None and boss.scope is None
    assert admin.role == boss.role == ActorRole.ADMIN


def test_a_platforms_merchants_speak_with_its_voice():
    acme = Principal(actor="acme", tenant="acme", is_admin=False)
    assert acme.actor_for(None) == "acme"
    assert acme.actor_for("shop-7") == "acme/shop-7"
