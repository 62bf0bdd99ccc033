"""python -m services.payment_core [serve|migrate]"""

from services.payment_core.bootstrap import main
from services.runtime.bootstrap import run

if __name__ == "__main__":
    run(main())
