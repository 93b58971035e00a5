import pytest
from django.urls import reverse


@pytest.mark.parametrize(
    "model", ["tenant", "membership", "upstream", "apikey", "accesstoken", "managementtoken", "usagerecord", "auditevent"]
)
def test_admin_changelist_and_add_render_for_staff(client, staff_user, api_key, model):
    client.force_login(staff_user)
    assert client.get(reverse(f"admin:keys_{model}_changelist")).status_code == 200
