"""The Early Help services: referral, allocation, audit and reporting."""
