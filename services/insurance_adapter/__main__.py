"""python -m services.insurance_adapter [serve|migrate]"""

from services.runtime.lean import keep_unused_modules_out

keep_unused_modules_out()

from services.insurance_adapter.bootstrap import main  # noqa: E402

main()
