"""python -m services.data_aggregation [serve|migrate]"""

from services.runtime.lean import keep_unused_modules_out

keep_unused_modules_out()

from services.data_aggregation.bootstrap import main  # noqa: E402

main()
