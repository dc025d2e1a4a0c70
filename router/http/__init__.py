"""The HTTP surface: app, chat pipeline, admin API, auth, OpenAI-shaped errors, SSE, request schemas.

Kept empty so that importing one of these modules (say `router.http.errors` from the policy)
does not pull in the application.
"""
