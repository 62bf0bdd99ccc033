"""python -m services.insurance_adapter [serve|migrate]"""

from services.insurance_adapter.bootstrap import main

main()
