"""The wire shapes both apps answer and read: requests (``requests``), responses and documented
errors (``contract``). Above the schema (``tinyimg.spec``: a model's defaults and limits are shown
as they are declared), below both apps."""
