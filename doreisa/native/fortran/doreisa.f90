! doreisa.f90: the Fortran API of the doreisa bridge (module doreisa), over the C API of doreisa.h.
!
! Same meaning as doreisa.h and the Python doreisa.Bridge: one bridge per MPI rank, created
! collectively on the simulation's communicator; doreisa_publish hands this rank's block of an
! array to the analytics when the contract wants that step, and costs a call when it does not.
!
! Compile this file with the simulation (it needs no MPI module) and link with libdoreisa:
!   mpif90 -O2 -o sim $(doreisa native --fortran) sim.f90 $(doreisa native --libs)
!
! Arrays are column-major: a Fortran block T(nx, ny) is the contract array with dims [y, x] and
! shape [NY, NX], and offset= gives the block's first element in Fortran order, 0-based (like
! the starts of MPI_Type_create_subarray): [x0, y0]. The block is assumed-shape, so a section
! such as u(1:nx, 1:ny) of an array with ghost cells is published as it lies in memory, without
! a copy by the compiler or by this module (sections with a negative stride are refused).
!
! Errors: every routine takes an optional integer ierr, set to DOREISA_OK (0) or a negative
! DOREISA_ERR_* code, the message being doreisa_last_error(). Without ierr, an error prints
! "doreisa: <message>" on error_unit and the simulation goes on: nothing here stops it.
!
!   use doreisa
!   type(doreisa_bridge) :: bridge
!   type(doreisa_counts) :: counts
!   call doreisa_init(bridge, MPI_COMM_WORLD)
!   do step = 0, nsteps - 1
!       call doreisa_publish(bridge, 'temperature', u(1:nx, 1:ny), step, offset=[x0, y0], time=t)
!       ...
!   end do
!   call doreisa_close(bridge, counts)        ! before MPI_Finalize
module doreisa
    use, intrinsic :: iso_c_binding
    use, intrinsic :: iso_fortran_env, only: error_unit
    use, intrinsic :: ieee_arithmetic, only: ieee_value, ieee_quiet_nan
    implicit none
    private

    public :: doreisa_init, doreisa_publish, doreisa_wants, doreisa_feedback, doreisa_close, doreisa_last_error

    ! Return codes (doreisa.h's doreisa_status): 0 is success, every error is negative.
    integer, parameter, public :: DOREISA_OK = 0
    integer, parameter, public :: DOREISA_ERR_ARGUMENT = -1     ! bad argument: unknown dtype, offset size, ...
    integer, parameter, public :: DOREISA_ERR_MISMATCH = -2     ! block does not match the contract
    integer, parameter, public :: DOREISA_ERR_LAYOUT = -3       ! the ranks' blocks do not tile the array
    integer, parameter, public :: DOREISA_ERR_UNAVAILABLE = -4  ! no doreisa runtime (not started by doreisa run)
    integer, parameter, public :: DOREISA_ERR_BRIDGE = -5       ! any other doreisa error (publish after close, ...)
    integer, parameter, public :: DOREISA_ERR_PYTHON = -6       ! the embedded Python could not start or import doreisa

    ! Element types (doreisa.h's doreisa_dtype); doreisa_publish takes the first four.
    integer, parameter, public :: DOREISA_FLOAT64 = 1, DOREISA_FLOAT32 = 2, DOREISA_INT64 = 3, DOREISA_INT32 = 4, &
                                  DOREISA_INT16 = 5, DOREISA_INT8 = 6, DOREISA_UINT64 = 7, DOREISA_UINT32 = 8, &
                                  DOREISA_UINT16 = 9, DOREISA_UINT8 = 10

    ! This rank's bridge: the C handle (doreisa_bridge *), null before doreisa_init and after doreisa_close.
    type, public :: doreisa_bridge
        type(c_ptr) :: ptr = c_null_ptr
    end type doreisa_bridge

    ! What one rank did (doreisa_close): doreisa.h's struct doreisa_counts.
    type, bind(C), public :: doreisa_counts
        integer(c_int64_t) :: calls = 0         ! publish calls
        integer(c_int64_t) :: published = 0     ! blocks copied for the analytics
        integer(c_int64_t) :: bytes_copied = 0
        integer(c_int64_t) :: skipped = 0       ! wanted steps skipped by backpressure (policy: skip)
        integer(c_int64_t) :: dropped = 0       ! wanted steps lost: runtime gone or blocked past timeouts.block
        integer(c_int64_t) :: not_selected = 0  ! wanted steps where this rank's block is outside the selected region
    end type doreisa_counts

    ! doreisa_publish(bridge, name, data, step [, offset] [, time] [, copied] [, ierr]):
    ! data real64, real32, int32 or int64, of rank 1, 2 or 3.
    interface doreisa_publish
        module procedure publish_real64_1, publish_real64_2, publish_real64_3
        module procedure publish_real32_1, publish_real32_2, publish_real32_3
        module procedure publish_int32_1, publish_int32_2, publish_int32_3
        module procedure publish_int64_1, publish_int64_2, publish_int64_3
    end interface doreisa_publish
    ! The message of an error found on the Fortran side, before any C call (C keeps its own).
    character(len=:), allocatable :: own_error
    !$omp threadprivate(own_error)

    interface
        integer(c_int) function c_create_f(comm, bridge) bind(C, name='doreisa_create_f')
            import :: c_int, c_ptr
            integer(c_int), value :: comm
            type(c_ptr), intent(out) :: bridge
        end function c_create_f

        integer(c_int) function c_publish_strided(bridge, name, data, dtype, ndim, shape, strides, offset, step, &
                                                  time, copied) bind(C, name='doreisa_publish_strided')
            import :: c_int, c_ptr, c_char, c_int64_t, c_double
            type(c_ptr), value :: bridge
            character(kind=c_char), intent(in) :: name(*)
            type(c_ptr), value :: data
            integer(c_int), value :: dtype, ndim
            integer(c_int64_t), intent(in) :: shape(*), strides(*)
            type(c_ptr), value :: offset
            integer(c_int64_t), value :: step
            real(c_double), value :: time
            integer(c_int), intent(out) :: copied
        end function c_publish_strided

        integer(c_int) function c_wants(bridge, name, step, time, wanted) bind(C, name='doreisa_wants')
            import :: c_int, c_ptr, c_char, c_int64_t, c_double
            type(c_ptr), value :: bridge
            character(kind=c_char), intent(in) :: name(*)
            integer(c_int64_t), value :: step
            real(c_double), value :: time
            integer(c_int), intent(out) :: wanted
        end function c_wants

        integer(c_int) function c_feedback(bridge, key, value, found) bind(C, name='doreisa_feedback')
            import :: c_int, c_ptr, c_char, c_double
            type(c_ptr), value :: bridge
            character(kind=c_char), intent(in) :: key(*)
            real(c_double), intent(inout) :: value
            integer(c_int), intent(out) :: found
        end function c_feedback

        integer(c_int) function c_close(bridge, counts) bind(C, name='doreisa_close')
            import :: c_int, c_ptr, doreisa_counts
            type(c_ptr), value :: bridge
            type(doreisa_counts), intent(inout) :: counts
        end function c_close

        type(c_ptr) function c_last_error() bind(C, name='doreisa_last_error')
            import :: c_ptr
        end function c_last_error

        integer(c_size_t) function c_strlen(text) bind(C, name='strlen')
            import :: c_size_t, c_ptr
            type(c_ptr), value :: text
        end function c_strlen
    end interface

contains

    ! Create this rank's bridge; collective over comm, a Fortran communicator handle (MPI_COMM_WORLD,
    ! a Cartesian communicator, ...). Without a doreisa runtime ierr is DOREISA_ERR_UNAVAILABLE and
    ! the bridge stays null: every later call then fails with DOREISA_ERR_ARGUMENT.
    subroutine doreisa_init(bridge, comm, ierr)
        type(doreisa_bridge), intent(out) :: bridge
        integer, intent(in) :: comm
        integer, intent(out), optional :: ierr

        call finish(c_create_f(int(comm, c_int), bridge%ptr), ierr)
    end subroutine doreisa_init

    ! Would doreisa_publish(bridge, name, ..., step) copy anything? Lets a simulation skip computing
    ! a field nobody wants. .false. on error.
    logical function doreisa_wants(bridge, name, step, time, ierr)
        type(doreisa_bridge), intent(in) :: bridge
        character(len=*), intent(in) :: name
        integer, intent(in) :: step
        real(c_double), intent(in), optional :: time
        integer, intent(out), optional :: ierr
        integer(c_int) :: rc, wanted

        wanted = 0
        rc = c_wants(bridge%ptr, c_string(name), int(step, c_int64_t), time_or_nan(time), wanted)
        doreisa_wants = rc == DOREISA_OK .and. wanted /= 0
        call finish(rc, ierr)
    end function doreisa_wants

    ! A steering value sent by the analytics (every rank sees the same at the same step). When the
    ! key was never sent, found is .false. and value is left as it was (so it can hold a default).
    subroutine doreisa_feedback(bridge, key, value, found, ierr)
        type(doreisa_bridge), intent(in) :: bridge
        character(len=*), intent(in) :: key
        real(c_double), intent(inout) :: value
        logical, intent(out), optional :: found
        integer, intent(out), optional :: ierr
        integer(c_int) :: rc, c_found

        c_found = 0
        rc = c_feedback(bridge%ptr, c_string(key), value, c_found)
        if (present(found)) found = rc == DOREISA_OK .and. c_found /= 0
        call finish(rc, ierr)
    end subroutine doreisa_feedback

    ! Wait until every published block is handed over, disconnect, fill counts and free the bridge
    ! (also on error: the bridge is null afterwards). Call it before MPI_Finalize.
    subroutine doreisa_close(bridge, counts, ierr)
        type(doreisa_bridge), intent(inout) :: bridge
        type(doreisa_counts), intent(out), optional :: counts
        integer, intent(out), optional :: ierr
        type(doreisa_counts) :: got
        integer(c_int) :: rc

        rc = c_close(bridge%ptr, got)
        bridge%ptr = c_null_ptr
        if (present(counts)) counts = got
        call finish(rc, ierr)
    end subroutine doreisa_close

    ! The message of the last error ("" if none).
    function doreisa_last_error() result(message)
        character(len=:), allocatable :: message
        character(kind=c_char), pointer :: chars(:)
        type(c_ptr) :: text
        integer :: i, n

        if (allocated(own_error)) then
            message = own_error
            return
        end if
        text = c_last_error()
        n = 0
        if (c_associated(text)) n = int(c_strlen(text))
        allocate (character(len=n) :: message)
        if (n == 0) return
        call c_f_pointer(text, chars, [n])
        do i = 1, n
            message(i:i) = chars(i)
        end do
    end function doreisa_last_error

    subroutine publish_real64_1(bridge, name, data, step, offset, time, copied, ierr)
        type(doreisa_bridge), intent(in) :: bridge
        character(len=*), intent(in) :: name
        real(c_double), intent(in), target :: data(:)
        integer, intent(in) :: step
        integer, intent(in), optional :: offset(:)
        real(c_double), intent(in), optional :: time
        logical, intent(out), optional :: copied
        integer, intent(out), optional :: ierr
        type(c_ptr) :: first, next(1)

        first = c_null_ptr
        next = c_null_ptr
        if (size(data) > 0) then
            first = c_loc(data(1))
            if (size(data, 1) > 1) next(1) = c_loc(data(2))
        end if
        call publish_block(bridge, name, DOREISA_FLOAT64, first, next, shape(data, kind=c_int64_t), step, &
                           offset, time, copied, ierr)
    end subroutine publish_real64_1

    subroutine publish_real64_2(bridge, name, data, step, offset, time, copied, ierr)
        type(doreisa_bridge), intent(in) :: bridge
        character(len=*), intent(in) :: name
        real(c_double), intent(in), target :: data(:, :)
        integer, intent(in) :: step
        integer, intent(in), optional :: offset(:)
        real(c_double), intent(in), optional :: time
        logical, intent(out), optional :: copied
        integer, intent(out), optional :: ierr
        type(c_ptr) :: first, next(2)

        first = c_null_ptr
        next = c_null_ptr
        if (size(data) > 0) then
            first = c_loc(data(1, 1))
            if (size(data, 1) > 1) next(1) = c_loc(data(2, 1))
            if (size(data, 2) > 1) next(2) = c_loc(data(1, 2))
        end if
        call publish_block(bridge, name, DOREISA_FLOAT64, first, next, shape(data, kind=c_int64_t), step, &
                           offset, time, copied, ierr)
    end subroutine publish_real64_2

    subroutine publish_real64_3(bridge, name, data, step, offset, time, copied, ierr)
        type(doreisa_bridge), intent(in) :: bridge
        character(len=*), intent(in) :: name
        real(c_double), intent(in), target :: data(:, :, :)
        integer, intent(in) :: step
        integer, intent(in), optional :: offset(:)
        real(c_double), intent(in), optional :: time
        logical, intent(out), optional :: copied
        integer, intent(out), optional :: ierr
        type(c_ptr) :: first, next(3)

        first = c_null_ptr
        next = c_null_ptr
        if (size(data) > 0) then
            first = c_loc(data(1, 1, 1))
            if (size(data, 1) > 1) next(1) = c_loc(data(2, 1, 1))
            if (size(data, 2) > 1) next(2) = c_loc(data(1, 2, 1))
            if (size(data, 3) > 1) next(3) = c_loc(data(1, 1, 2))
        end if
        call publish_block(bridge, name, DOREISA_FLOAT64, first, next, shape(data, kind=c_int64_t), step, &
                           offset, time, copied, ierr)
    end subroutine publish_real64_3

    subroutine publish_real32_1(bridge, name, data, step, offset, time, copied, ierr)
        type(doreisa_bridge), intent(in) :: bridge
        character(len=*), intent(in) :: name
        real(c_float), intent(in), target :: data(:)
        integer, intent(in) :: step
        integer, intent(in), optional :: offset(:)
        real(c_double), intent(in), optional :: time
        logical, intent(out), optional :: copied
        integer, intent(out), optional :: ierr
        type(c_ptr) :: first, next(1)

        first = c_null_ptr
        next = c_null_ptr
        if (size(data) > 0) then
            first = c_loc(data(1))
            if (size(data, 1) > 1) next(1) = c_loc(data(2))
        end if
        call publish_block(bridge, name, DOREISA_FLOAT32, first, next, shape(data, kind=c_int64_t), step, &
                           offset, time, copied, ierr)
    end subroutine publish_real32_1

    subroutine publish_real32_2(bridge, name, data, step, offset, time, copied, ierr)
        type(doreisa_bridge), intent(in) :: bridge
        character(len=*), intent(in) :: name
        real(c_float), intent(in), target :: data(:, :)
        integer, intent(in) :: step
        integer, intent(in), optional :: offset(:)
        real(c_double), intent(in), optional :: time
        logical, intent(out), optional :: copied
        integer, intent(out), optional :: ierr
        type(c_ptr) :: first, next(2)

        first = c_null_ptr
        next = c_null_ptr
        if (size(data) > 0) then
            first = c_loc(data(1, 1))
            if (size(data, 1) > 1) next(1) = c_loc(data(2, 1))
            if (size(data, 2) > 1) next(2) = c_loc(data(1, 2))
        end if
        call publish_block(bridge, name, DOREISA_FLOAT32, first, next, shape(data, kind=c_int64_t), step, &
                           offset, time, copied, ierr)
    end subroutine publish_real32_2

    subroutine publish_real32_3(bridge, name, data, step, offset, time, copied, ierr)
        type(doreisa_bridge), intent(in) :: bridge
        character(len=*), intent(in) :: name
        real(c_float), intent(in), target :: data(:, :, :)
        integer, intent(in) :: step
        integer, intent(in), optional :: offset(:)
        real(c_double), intent(in), optional :: time
        logical, intent(out), optional :: copied
        integer, intent(out), optional :: ierr
        type(c_ptr) :: first, next(3)

        first = c_null_ptr
        next = c_null_ptr
        if (size(data) > 0) then
            first = c_loc(data(1, 1, 1))
            if (size(data, 1) > 1) next(1) = c_loc(data(2, 1, 1))
            if (size(data, 2) > 1) next(2) = c_loc(data(1, 2, 1))
            if (size(data, 3) > 1) next(3) = c_loc(data(1, 1, 2))
        end if
        call publish_block(bridge, name, DOREISA_FLOAT32, first, next, shape(data, kind=c_int64_t), step, &
                           offset, time, copied, ierr)
    end subroutine publish_real32_3

    subroutine publish_int32_1(bridge, name, data, step, offset, time, copied, ierr)
        type(doreisa_bridge), intent(in) :: bridge
        character(len=*), intent(in) :: name
        integer(c_int32_t), intent(in), target :: data(:)
        integer, intent(in) :: step
        integer, intent(in), optional :: offset(:)
        real(c_double), intent(in), optional :: time
        logical, intent(out), optional :: copied
        integer, intent(out), optional :: ierr
        type(c_ptr) :: first, next(1)

        first = c_null_ptr
        next = c_null_ptr
        if (size(data) > 0) then
            first = c_loc(data(1))
            if (size(data, 1) > 1) next(1) = c_loc(data(2))
        end if
        call publish_block(bridge, name, DOREISA_INT32, first, next, shape(data, kind=c_int64_t), step, &
                           offset, time, copied, ierr)
    end subroutine publish_int32_1

    subroutine publish_int32_2(bridge, name, data, step, offset, time, copied, ierr)
        type(doreisa_bridge), intent(in) :: bridge
        character(len=*), intent(in) :: name
        integer(c_int32_t), intent(in), target :: data(:, :)
        integer, intent(in) :: step
        integer, intent(in), optional :: offset(:)
        real(c_double), intent(in), optional :: time
        logical, intent(out), optional :: copied
        integer, intent(out), optional :: ierr
        type(c_ptr) :: first, next(2)

        first = c_null_ptr
        next = c_null_ptr
        if (size(data) > 0) then
            first = c_loc(data(1, 1))
            if (size(data, 1) > 1) next(1) = c_loc(data(2, 1))
            if (size(data, 2) > 1) next(2) = c_loc(data(1, 2))
        end if
        call publish_block(bridge, name, DOREISA_INT32, first, next, shape(data, kind=c_int64_t), step, &
                           offset, time, copied, ierr)
    end subroutine publish_int32_2

    subroutine publish_int32_3(bridge, name, data, step, offset, time, copied, ierr)
        type(doreisa_bridge), intent(in) :: bridge
        character(len=*), intent(in) :: name
        integer(c_int32_t), intent(in), target :: data(:, :, :)
        integer, intent(in) :: step
        integer, intent(in), optional :: offset(:)
        real(c_double), intent(in), optional :: time
        logical, intent(out), optional :: copied
        integer, intent(out), optional :: ierr
        type(c_ptr) :: first, next(3)

        first = c_null_ptr
        next = c_null_ptr
        if (size(data) > 0) then
            first = c_loc(data(1, 1, 1))
            if (size(data, 1) > 1) next(1) = c_loc(data(2, 1, 1))
            if (size(data, 2) > 1) next(2) = c_loc(data(1, 2, 1))
            if (size(data, 3) > 1) next(3) = c_loc(data(1, 1, 2))
        end if
        call publish_block(bridge, name, DOREISA_INT32, first, next, shape(data, kind=c_int64_t), step, &
                           offset, time, copied, ierr)
    end subroutine publish_int32_3

    subroutine publish_int64_1(bridge, name, data, step, offset, time, copied, ierr)
        type(doreisa_bridge), intent(in) :: bridge
        character(len=*), intent(in) :: name
        integer(c_int64_t), intent(in), target :: data(:)
        integer, intent(in) :: step
        integer, intent(in), optional :: offset(:)
        real(c_double), intent(in), optional :: time
        logical, intent(out), optional :: copied
        integer, intent(out), optional :: ierr
        type(c_ptr) :: first, next(1)

        first = c_null_ptr
        next = c_null_ptr
        if (size(data) > 0) then
            first = c_loc(data(1))
            if (size(data, 1) > 1) next(1) = c_loc(data(2))
        end if
        call publish_block(bridge, name, DOREISA_INT64, first, next, shape(data, kind=c_int64_t), step, &
                           offset, time, copied, ierr)
    end subroutine publish_int64_1

    subroutine publish_int64_2(bridge, name, data, step, offset, time, copied, ierr)
        type(doreisa_bridge), intent(in) :: bridge
        character(len=*), intent(in) :: name
        integer(c_int64_t), intent(in), target :: data(:, :)
        integer, intent(in) :: step
        integer, intent(in), optional :: offset(:)
        real(c_double), intent(in), optional :: time
        logical, intent(out), optional :: copied
        integer, intent(out), optional :: ierr
        type(c_ptr) :: first, next(2)

        first = c_null_ptr
        next = c_null_ptr
        if (size(data) > 0) then
            first = c_loc(data(1, 1))
            if (size(data, 1) > 1) next(1) = c_loc(data(2, 1))
            if (size(data, 2) > 1) next(2) = c_loc(data(1, 2))
        end if
        call publish_block(bridge, name, DOREISA_INT64, first, next, shape(data, kind=c_int64_t), step, &
                           offset, time, copied, ierr)
    end subroutine publish_int64_2

    subroutine publish_int64_3(bridge, name, data, step, offset, time, copied, ierr)
        type(doreisa_bridge), intent(in) :: bridge
        character(len=*), intent(in) :: name
        integer(c_int64_t), intent(in), target :: data(:, :, :)
        integer, intent(in) :: step
        integer, intent(in), optional :: offset(:)
        real(c_double), intent(in), optional :: time
        logical, intent(out), optional :: copied
        integer, intent(out), optional :: ierr
        type(c_ptr) :: first, next(3)

        first = c_null_ptr
        next = c_null_ptr
        if (size(data) > 0) then
            first = c_loc(data(1, 1, 1))
            if (size(data, 1) > 1) next(1) = c_loc(data(2, 1, 1))
            if (size(data, 2) > 1) next(2) = c_loc(data(1, 2, 1))
            if (size(data, 3) > 1) next(3) = c_loc(data(1, 1, 2))
        end if
        call publish_block(bridge, name, DOREISA_INT64, first, next, shape(data, kind=c_int64_t), step, &
                           offset, time, copied, ierr)
    end subroutine publish_int64_3

    ! What every specific of doreisa_publish does: element strides from the addresses of the first
    ! element and of its neighbour along each dimension (next(d), null where the extent is <= 1),
    ! then doreisa_publish_strided with shape, strides and offset reversed into C order.
    subroutine publish_block(bridge, name, dtype, first, next, extents, step, offset, time, copied, ierr)
        type(doreisa_bridge), intent(in) :: bridge
        character(len=*), intent(in) :: name
        integer, intent(in) :: dtype
        type(c_ptr), intent(in) :: first, next(:)
        integer(c_int64_t), intent(in) :: extents(:)
        integer, intent(in) :: step
        integer, intent(in), optional :: offset(:)
        real(c_double), intent(in), optional :: time
        logical, intent(out), optional :: copied
        integer, intent(out), optional :: ierr
        integer(c_int64_t) :: strides(size(extents)), c_shape(size(extents)), c_strides(size(extents))
        integer(c_int64_t), target :: c_offset(size(extents))
        integer(c_int64_t) :: dense
        integer(c_intptr_t) :: gap
        type(c_ptr) :: starts
        integer(c_int) :: rc, c_copied
        integer :: d, ndim

        if (present(copied)) copied = .false.
        ndim = size(extents)
        dense = 1
        do d = 1, ndim
            if (c_associated(next(d))) then
                gap = address(next(d)) - address(first)
                if (gap < 0) then
                    call fail_here('doreisa_publish(' // trim(name) // '): dimension ' // decimal(d) // &
                                   ' of the block has a negative stride (a reversed section); publish a copy', ierr)
                    return
                end if
                strides(d) = gap / item_size(dtype)
            else  ! extent 0 or 1: any stride does; this is the one of a contiguous block
                strides(d) = dense
            end if
            dense = strides(d) * max(extents(d), 1_c_int64_t)
        end do
        starts = c_null_ptr
        if (present(offset)) then
            if (size(offset) /= ndim) then
                call fail_here('doreisa_publish(' // trim(name) // '): offset has ' // decimal(size(offset)) // &
                               ' values for a block of rank ' // decimal(ndim), ierr)
                return
            end if
            c_offset = int(offset(ndim:1:-1), c_int64_t)
            starts = c_loc(c_offset)
        end if
        c_shape = extents(ndim:1:-1)
        c_strides = strides(ndim:1:-1)
        c_copied = 0
        rc = c_publish_strided(bridge%ptr, c_string(name), first, int(dtype, c_int), int(ndim, c_int), c_shape, &
                               c_strides, starts, int(step, c_int64_t), time_or_nan(time), c_copied)
        if (present(copied)) copied = rc == DOREISA_OK .and. c_copied /= 0
        call finish(rc, ierr)
    end subroutine publish_block

    ! After a C call: ierr = rc, or, without ierr, the message of a failure on error_unit.
    subroutine finish(rc, ierr)
        integer(c_int), intent(in) :: rc
        integer, intent(out), optional :: ierr

        if (rc /= DOREISA_OK .and. allocated(own_error)) deallocate (own_error)
        if (present(ierr)) then
            ierr = int(rc)
        else if (rc /= DOREISA_OK) then
            write (error_unit, '(a)') 'doreisa: ' // doreisa_last_error()
        end if
    end subroutine finish

    ! A bad argument found here, before any C call.
    subroutine fail_here(message, ierr)
        character(len=*), intent(in) :: message
        integer, intent(out), optional :: ierr

        own_error = message
        if (present(ierr)) then
            ierr = DOREISA_ERR_ARGUMENT
        else
            write (error_unit, '(a)') 'doreisa: ' // message
        end if
    end subroutine fail_here

    function c_string(text) result(c_text)
        character(len=*), intent(in) :: text
        character(kind=c_char, len=:), allocatable :: c_text

        c_text = trim(text) // c_null_char
    end function c_string

    real(c_double) function time_or_nan(time)
        real(c_double), intent(in), optional :: time

        if (present(time)) then
            time_or_nan = time
        else
            time_or_nan = ieee_value(0.0_c_double, ieee_quiet_nan)  ! DOREISA_NO_TIME
        end if
    end function time_or_nan

    integer(c_intptr_t) function address(ptr)
        type(c_ptr), intent(in) :: ptr

        address = transfer(ptr, 0_c_intptr_t)
    end function address

    integer(c_int64_t) function item_size(dtype)
        integer, intent(in) :: dtype

        select case (dtype)
        case (DOREISA_FLOAT64, DOREISA_INT64)
            item_size = 8
        case default
            item_size = 4
        end select
    end function item_size

    function decimal(n) result(text)
        integer, intent(in) :: n
        character(len=:), allocatable :: text
        character(len=12) :: buffer

        write (buffer, '(i0)') n
        text = trim(buffer)
    end function decimal

end module doreisa
