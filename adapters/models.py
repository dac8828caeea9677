"""LoRA adapters of process reward models, one per prm_version, stored through Django's storage API."""

from __future__ import annotations

from django.db import models


def adapter_upload_to(instance: PRMAdapter, filename: str) -> str:
    return f"prm_adapters/{instance.sha256[:16]}/{filename}"


class PRMAdapter(models.Model):
    prm_version = models.CharField(max_length=200, unique=True, help_text="PRM version the adapter belongs to.")
    base_model = models.CharField(max_length=300, help_text="Base model the adapter was trained on.")
    worker = models.CharField(max_length=200, help_text="Worker that uploaded the adapter.")
    file = models.FileField(upload_to=adapter_upload_to, help_text="Zip of peft's save_pretrained folder.")
    sha256 = models.CharField(max_length=64, help_text="sha256 of the uploaded bytes.")
    size = models.BigIntegerField(help_text="Size of the uploaded zip, in bytes.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "PRM adapter"
        constraints = [models.CheckConstraint(condition=models.Q(size__gte=0), name="adapter_size_not_negative")]

    def __str__(self) -> str:
        return f"{self.prm_version} ({self.base_model})"
