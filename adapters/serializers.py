"""Shapes of the adapter endpoints."""

from __future__ import annotations

from rest_framework import serializers

from adapters.models import PRMAdapter


class PRMAdapterSerializer(serializers.ModelSerializer):
    """One adapter as ``GET /prm_adapters`` lists it: ``prm_version`` and, additively, what else is known."""

    class Meta:
        model = PRMAdapter
        fields = ["prm_version", "base_model", "worker", "sha256", "size", "created_at"]


class PRMAdapterVersionQuerySerializer(serializers.Serializer):
    """Query parameters of ``GET /prm_adapter``."""

    prm_version = serializers.CharField(
        min_length=1, max_length=200, trim_whitespace=False, help_text="PRM version to download."
    )


class PRMAdapterUploadQuerySerializer(serializers.Serializer):
    """Query parameters of ``POST /prm_adapter`` (the body is the zip itself)."""

    prm_version = serializers.CharField(
        min_length=1, max_length=200, trim_whitespace=False, help_text="PRM version of the adapter."
    )
    base_model = serializers.CharField(
        min_length=1, max_length=300, trim_whitespace=False, help_text="Base model the adapter was trained on."
    )
    worker = serializers.CharField(
        min_length=1, max_length=200, trim_whitespace=False, help_text="Uploading worker, kept as given."
    )
