{# Rendered by nanoforge (src/pipeline/settings.rs); written with CRLF line endings and
    ASCII only. Windows runs %SystemRoot%\Setup\Scripts\SetupComplete.cmd once, after
    setup and before the first logon. Every value inserted here was validated first. #}
@echo off
rem Written by nanoforge. Runs once at first boot; everything goes to the log below.
setlocal
set "LOG=%SystemRoot%\Setup\Scripts\SetupComplete.log"
>> "%LOG%" echo %DATE% %TIME% SetupComplete.cmd started
{% for step in steps %}
>> "%LOG%" echo %DATE% %TIME% step {{ loop.index }} of {{ steps | length }}: {{ step.label }}
{{ step.command }} >> "%LOG%" 2>&1
>> "%LOG%" echo exit code %ERRORLEVEL%
{% endfor %}
>> "%LOG%" echo %DATE% %TIME% SetupComplete.cmd finished
endlocal
exit /b 0
