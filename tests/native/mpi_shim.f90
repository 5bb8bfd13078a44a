! mpi_shim.f90: a minimal `module mpi` over MPICH's C library, for the tests only.
!
! The mpich wheel that doreisa[mpich] installs ships MPICH's C library (libmpi.so.12, mpi.h) but
! no Fortran bindings: no mpif90, no mpi.mod, no libmpifort. The Fortran example
! (examples/heat_fortran) is ordinary MPI Fortran, which a site builds with its own mpif90; the
! tests build it with plain gfortran, this module in place of `use mpi`, and -lmpi:
!   make -C examples/heat_fortran FC=gfortran MPI_SHIM=$PWD/tests/native/mpi_shim.f90
!
! It implements only what the example calls, with the `use mpi` signatures (ierror last and
! required). MPICH ABI only: it relies on MPICH's C handles being ints equal to the Fortran
! handles (values from mpi.h) and on MPI_Status being 5 ints in Fortran order. Do not use it with
! Open MPI or any other MPI library.
module mpi
    use, intrinsic :: iso_c_binding
    implicit none
    private

    integer, parameter, public :: MPI_COMM_WORLD = int(z'44000000')
    integer, parameter, public :: MPI_DOUBLE_PRECISION = int(z'4c00081f')
    integer, parameter, public :: MPI_PROC_NULL = -1
    integer, parameter, public :: MPI_STATUS_SIZE = 5

    ! Passed as a status argument, it stands for C's MPI_STATUS_IGNORE (recognised by its address).
    integer, target, public :: MPI_STATUS_IGNORE(MPI_STATUS_SIZE)

    public :: MPI_Init, MPI_Finalize, MPI_Abort, MPI_Comm_size, MPI_Comm_rank, MPI_Comm_free
    public :: MPI_Dims_create, MPI_Cart_create, MPI_Cart_coords, MPI_Cart_shift, MPI_Sendrecv

    interface
        integer(c_int) function c_init(argc, argv) bind(C, name='MPI_Init')
            import :: c_int, c_ptr
            type(c_ptr), value :: argc, argv
        end function c_init

        integer(c_int) function c_finalize() bind(C, name='MPI_Finalize')
            import :: c_int
        end function c_finalize

        integer(c_int) function c_abort(comm, errorcode) bind(C, name='MPI_Abort')
            import :: c_int
            integer(c_int), value :: comm, errorcode
        end function c_abort

        integer(c_int) function c_comm_size(comm, size) bind(C, name='MPI_Comm_size')
            import :: c_int
            integer(c_int), value :: comm
            integer(c_int), intent(out) :: size
        end function c_comm_size

        integer(c_int) function c_comm_rank(comm, rank) bind(C, name='MPI_Comm_rank')
            import :: c_int
            integer(c_int), value :: comm
            integer(c_int), intent(out) :: rank
        end function c_comm_rank

        integer(c_int) function c_comm_free(comm) bind(C, name='MPI_Comm_free')
            import :: c_int
            integer(c_int), intent(inout) :: comm
        end function c_comm_free

        integer(c_int) function c_dims_create(nnodes, ndims, dims) bind(C, name='MPI_Dims_create')
            import :: c_int
            integer(c_int), value :: nnodes, ndims
            integer(c_int), intent(inout) :: dims(*)
        end function c_dims_create

        integer(c_int) function c_cart_create(comm_old, ndims, dims, periods, reorder, comm_cart) &
            bind(C, name='MPI_Cart_create')
            import :: c_int
            integer(c_int), value :: comm_old, ndims
            integer(c_int), intent(in) :: dims(*), periods(*)
            integer(c_int), value :: reorder
            integer(c_int), intent(out) :: comm_cart
        end function c_cart_create

        integer(c_int) function c_cart_coords(comm, rank, maxdims, coords) bind(C, name='MPI_Cart_coords')
            import :: c_int
            integer(c_int), value :: comm, rank, maxdims
            integer(c_int), intent(out) :: coords(*)
        end function c_cart_coords

        integer(c_int) function c_cart_shift(comm, direction, disp, rank_source, rank_dest) &
            bind(C, name='MPI_Cart_shift')
            import :: c_int
            integer(c_int), value :: comm, direction, disp
            integer(c_int), intent(out) :: rank_source, rank_dest
        end function c_cart_shift

        integer(c_int) function c_sendrecv(sendbuf, sendcount, sendtype, dest, sendtag, recvbuf, recvcount, &
                                           recvtype, source, recvtag, comm, status) bind(C, name='MPI_Sendrecv')
            import :: c_int, c_ptr
            type(*), dimension(*), intent(in) :: sendbuf
            integer(c_int), value :: sendcount, sendtype, dest, sendtag
            type(*), dimension(*) :: recvbuf
            integer(c_int), value :: recvcount, recvtype, source, recvtag, comm
            type(c_ptr), value :: status
        end function c_sendrecv
    end interface

contains

    subroutine MPI_Init(ierror)
        integer, intent(out) :: ierror

        ierror = c_init(c_null_ptr, c_null_ptr)
    end subroutine MPI_Init

    subroutine MPI_Finalize(ierror)
        integer, intent(out) :: ierror

        ierror = c_finalize()
    end subroutine MPI_Finalize

    subroutine MPI_Abort(comm, errorcode, ierror)
        integer, intent(in) :: comm, errorcode
        integer, intent(out) :: ierror

        ierror = c_abort(comm, errorcode)
    end subroutine MPI_Abort

    subroutine MPI_Comm_size(comm, size, ierror)
        integer, intent(in) :: comm
        integer, intent(out) :: size, ierror

        ierror = c_comm_size(comm, size)
    end subroutine MPI_Comm_size

    subroutine MPI_Comm_rank(comm, rank, ierror)
        integer, intent(in) :: comm
        integer, intent(out) :: rank, ierror

        ierror = c_comm_rank(comm, rank)
    end subroutine MPI_Comm_rank

    subroutine MPI_Comm_free(comm, ierror)
        integer, intent(inout) :: comm
        integer, intent(out) :: ierror

        ierror = c_comm_free(comm)
    end subroutine MPI_Comm_free

    subroutine MPI_Dims_create(nnodes, ndims, dims, ierror)
        integer, intent(in) :: nnodes, ndims
        integer, intent(inout) :: dims(ndims)
        integer, intent(out) :: ierror

        ierror = c_dims_create(nnodes, ndims, dims)
    end subroutine MPI_Dims_create

    ! Fortran logicals to C ints; dims, periods and coords keep their order (dims(1) is C's dims[0]).
    subroutine MPI_Cart_create(comm_old, ndims, dims, periods, reorder, comm_cart, ierror)
        integer, intent(in) :: comm_old, ndims, dims(ndims)
        logical, intent(in) :: periods(ndims), reorder
        integer, intent(out) :: comm_cart, ierror
        integer(c_int) :: c_periods(ndims)

        c_periods = merge(1, 0, periods)
        ierror = c_cart_create(comm_old, ndims, dims, c_periods, merge(1, 0, reorder), comm_cart)
    end subroutine MPI_Cart_create

    subroutine MPI_Cart_coords(comm, rank, maxdims, coords, ierror)
        integer, intent(in) :: comm, rank, maxdims
        integer, intent(out) :: coords(maxdims), ierror

        ierror = c_cart_coords(comm, rank, maxdims, coords)
    end subroutine MPI_Cart_coords

    subroutine MPI_Cart_shift(comm, direction, disp, rank_source, rank_dest, ierror)
        integer, intent(in) :: comm, direction, disp
        integer, intent(out) :: rank_source, rank_dest, ierror

        ierror = c_cart_shift(comm, direction, disp, rank_source, rank_dest)
    end subroutine MPI_Cart_shift

    subroutine MPI_Sendrecv(sendbuf, sendcount, sendtype, dest, sendtag, recvbuf, recvcount, recvtype, source, &
                            recvtag, comm, status, ierror)
        type(*), dimension(*), intent(in) :: sendbuf
        type(*), dimension(*) :: recvbuf
        integer, intent(in) :: sendcount, sendtype, dest, sendtag, recvcount, recvtype, source, recvtag, comm
        integer, target, intent(inout) :: status(MPI_STATUS_SIZE)
        integer, intent(out) :: ierror
        type(c_ptr) :: c_status

        c_status = c_loc(status)
        if (c_associated(c_status, c_loc(MPI_STATUS_IGNORE))) c_status = transfer(1_c_intptr_t, c_status)
        ierror = c_sendrecv(sendbuf, sendcount, sendtype, dest, sendtag, recvbuf, recvcount, recvtype, source, &
                            recvtag, comm, c_status)
    end subroutine MPI_Sendrecv

end module mpi
