"""Prices, budgets, ledgers and every Redis key Triage uses. Never imports ``router``."""

from .accountant import Accountant, AccountingSettings, complexity_bucket
from .budgets import BudgetStore
from .keys import KeyStore
from .models import (
    AccountingUnavailable,
    Admission,
    BudgetExceeded,
    BudgetPolicy,
    KeyInfo,
    LedgerRecord,
    ModelPrice,
    PlanEstimate,
    PriceSpec,
    Principal,
    TenantMismatch,
    UpstreamCall,
    Usage,
)
from .prices import PriceBook
from .tokens import count_text_tokens, estimate_prompt_tokens

__all__ = [
    "Accountant", "AccountingSettings", "AccountingUnavailable", "Admission", "BudgetExceeded", "BudgetPolicy",
    "BudgetStore", "KeyInfo", "KeyStore", "LedgerRecord", "ModelPrice", "PlanEstimate", "PriceBook", "PriceSpec",
    "Principal", "TenantMismatch", "UpstreamCall", "Usage", "complexity_bucket", "count_text_tokens",
    "estimate_prompt_tokens",
]
