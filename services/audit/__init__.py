"""Audit service: monthly quality audits of cases, graded."""
