<?xml version="1.0" encoding="UTF-8"?>
<!-- deskboot: ALE {{ model.name }} {{ mac.colon }} -->
<settings>
{%- if model.vars.syntax == "myriad" %}
{%- include "alcatel/myriad-settings.inc" %}
{%- include "alcatel/myriad-mac.inc" %}
{%- else %}
{%- include "alcatel/premium-settings.inc" %}
{%- include "alcatel/premium-mac.inc" %}
{%- endif %}
</settings>
