<?xml version="1.0" encoding="UTF-8"?>
<!-- deskboot: common file for the ALE {{ model.name }}; nothing per phone here. -->
<settings>
{%- if model.vars.syntax == "myriad" %}
{%- include "alcatel/myriad-settings.inc" %}
{%- else %}
{%- include "alcatel/premium-settings.inc" %}
{%- endif %}
</settings>
