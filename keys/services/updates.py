"""The skeleton every update service shares (HackSoft's `model_update`): set what the caller changes,
validate, save only the columns that moved, and say which fields changed, so the audit event names
exactly those."""

from collections.abc import Callable, Mapping

from django.db import models


def model_update(
    *, instance: models.Model, data: Mapping[str, object], clean: Callable[[], None] | None = None
) -> list[str]:
    """Apply `data` to `instance`, validate it (`clean`, by default full_clean, which may itself
    normalise fields), and save the columns that differ from before, if any. Returns the names in
    `data` whose value changed, sorted."""
    columns = [field for field in instance._meta.concrete_fields if not field.primary_key]
    # What is stored, not what the instance holds: a ModelForm (the admin's) has already set its
    # values on the instance it hands over.
    stored = type(instance)._default_manager.filter(pk=instance.pk).values(*(f.attname for f in columns))
    before = stored.first() or {field.attname: getattr(instance, field.attname) for field in columns}
    changed = sorted(name for name, value in data.items() if before.get(_attname(instance, name)) != value)
    for name, value in data.items():
        setattr(instance, name, value)
    (clean or instance.full_clean)()
    moved = [field.attname for field in columns if getattr(instance, field.attname) != before[field.attname]]
    if moved:
        touched = [field.attname for field in columns if getattr(field, "auto_now", False)]
        instance.save(update_fields=sorted(set(moved + touched)))
    return changed


def _attname(instance: models.Model, name: str) -> str:
    """The column attribute of the field `name` (tenant -> tenant_id): `data` names the model's own
    fields, never a reverse relation or a generic foreign key, which have no column."""
    field = instance._meta.get_field(name)
    if not isinstance(field, models.Field):
        raise TypeError(f"{type(instance).__name__}.{name} is not a field of its own")
    return field.attname
