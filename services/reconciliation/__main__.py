"""python -m services.reconciliation [serve|migrate]"""

from services.runtime.lean import keep_unused_modules_out

keep_unused_modules_out()

from services.reconciliation.bootstrap import main  # noqa: E402

main()
