"""python -m services.payment_core [serve|migrate]"""

from services.runtime.lean import keep_unused_modules_out

keep_unused_modules_out()

from services.payment_core.bootstrap import main  # noqa: E402
from services.runtime.bootstrap import run  # noqa: E402

if __name__ == "__main__":
    run(main())
