{# Rendered by nanoforge (src/pipeline/settings.rs); written with CRLF line endings and
   ASCII only. Windows runs %SystemRoot%\Setup\Scripts\SetupComplete.cmd once, after setup
   and before the first logon. Every value inserted here was validated first. #}
@echo off
rem Written by nanoforge. Runs once at first boot. The first block runs the rest of this
rem script again with everything it prints, errors included, appended to the log.
if not "%~1"=="--logged" (
    call "%~f0" --logged >> "{{ log }}" 2>&1
    exit /b 0
)
echo %DATE% %TIME% SetupComplete.cmd started
{% for step in steps %}
echo %DATE% %TIME% step {{ loop.index }} of {{ steps | length }}: {{ step.label }}
{{ step.command }}
echo exit code %ERRORLEVEL%
{% endfor %}
echo %DATE% %TIME% SetupComplete.cmd finished
exit /b 0
