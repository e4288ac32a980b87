"""Prefect flows and deployments for ehrfetch.

Thin by design: flows call ehrfetch and hold no logic of their own. This is the only
package that imports Prefect; ehrfetch runs and is tested without an orchestrator.
"""
